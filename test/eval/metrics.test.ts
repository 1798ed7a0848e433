import { describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { accuracy, computeMetrics, f1, GLUE_METRICS, matthews, pearson, spearman } from '@fisher-merge/eval';
import { primaryMetric } from '@fisher-merge/eval/evaluate';

describe('GLUE metrics', () => {
  it('accuracy counts exact matches', () => {
    expect(accuracy([1, 0, 1, 1], [1, 1, 1, 0])).toBe(0.5);
  });

  it('f1 of the positive class', () => {
    // tp=2 fp=1 fn=1 -> precision 2/3, recall 2/3
    expect(f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])).toBeCloseTo(2 / 3, 12);
    expect(f1([0, 0], [1, 0])).toBe(0);
  });

  it('matthews: +1 perfect, -1 inverted, 0 for a constant prediction, and the 2x2 formula otherwise', () => {
    expect(matthews([1, 0, 1, 0], [1, 0, 1, 0])).toBeCloseTo(1, 12);
    expect(matthews([0, 1, 0, 1], [1, 0, 1, 0])).toBeCloseTo(-1, 12);
    expect(matthews([1, 1, 1, 1], [1, 0, 1, 0])).toBe(0);
    const p = [1, 1, 0, 0, 1, 0, 1];
    const y = [1, 0, 0, 1, 1, 0, 0];
    let tp = 0, tn = 0, fp = 0, fn = 0;
    p.forEach((v, i) => (v === 1 ? (y[i] === 1 ? tp++ : fp++) : y[i] === 1 ? fn++ : tn++));
    const expected = (tp * tn - fp * fn) / Math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
    expect(matthews(p, y)).toBeCloseTo(expected, 12);
  });

  it('pearson is invariant to affine maps and spearman to monotone ones', () => {
    const x = [0.3, 1.2, -0.5, 2.2, 0.9, 0.1];
    const y = [1.1, 0.7, -0.2, 3.0, 0.4, 0.5];
    expect(pearson(x.map((v) => 3 * v - 2), y)).toBeCloseTo(pearson(x, y), 12);
    expect(spearman(x.map((v) => Math.exp(v)), y)).toBeCloseTo(spearman(x, y), 12);
    expect(spearman(x, x.map((v) => v ** 3))).toBeCloseTo(1, 12);
  });

  it('spearman gives ties their average rank', () => {
    // ranks of x: [1, 2.5, 2.5, 4]; of y: [1, 2, 3, 4]
    const expected = pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]);
    expect(spearman([1, 2, 2, 3], [10, 20, 30, 40])).toBeCloseTo(expected, 12);
    expect(expected).toBeLessThan(1);
  });

  it('computeMetrics takes argmax for classification and the value for regression', () => {
    const logits = new Float32Array([0.1, 0.9, 2, -1, 0.3, 0.2]);
    expect(computeMetrics(['accuracy'], logits, 2, [1, 0, 1])).toEqual({ accuracy: 2 / 3 });
    const reg = computeMetrics(['pearson', 'spearmanr'], new Float32Array([1, 2, 3]), 1, [2, 4, 6.5]);
    expect(reg.spearmanr).toBeCloseTo(1, 12);
    expect(reg.pearson).toBeGreaterThan(0.99);
  });

  it("judges a task by GLUE's first metric, accuracy, except cola by Matthews and stsb by Spearman", () => {
    for (const [task, metrics] of Object.entries(GLUE_METRICS)) {
      const expected = task === 'cola' ? 'matthews_correlation' : task === 'stsb' ? 'spearmanr' : metrics[0];
      expect(primaryMetric(glueTask(task)), task).toBe(expected);
    }
    expect(primaryMetric(glueTask('mrpc'))).toBe('accuracy');
  });
});
