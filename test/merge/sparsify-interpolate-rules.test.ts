import { describe, expect, it } from 'vitest';
import { SeededRandom } from '@fisher-merge/core';
import { dropSeed, keepBreadcrumbs, keepTopMagnitude, magnitudeRankDrop, mergeEncoders, resolveRule, type Params, type TensorSlot } from '@fisher-merge/merge';

/**
 * breadcrumbs, breadcrumbs-ties, della, della-linear, model-stock, slerp and magmax on small tensors:
 * each expected value is derived here from the rule's formula (libs/merge/README.md), in float64.
 */
const matrix: TensorSlot = { name: 'l0.ffn_in.weight', role: 'ffnIn', layer: 0, param: 'weight', shape: [2, 5] };
const bias: TensorSlot = { name: 'l0.ffn_in.bias', role: 'ffnIn', layer: 0, param: 'bias', shape: [5] };
const slots = [matrix, bias];

const base = new Map([
  [matrix.name, Float32Array.of(0.5, -1, 0.25, 2, 0, 1, -0.5, 0.75, -2, 0.125)],
  [bias.name, Float32Array.of(0.125, 0.25, -0.375, 0.5, -0.625)],
]);
const deltas = [
  new Map([
    [matrix.name, [0.5, -3, 1, -0.25, 2, 0.125, -1.5, 4, 0.375, -0.75]],
    [bias.name, [1, -1, 1, 1, 0.5]],
  ]),
  new Map([
    [matrix.name, [-1, 2, 0.5, 0.25, -2.5, 1, 1.5, -0.5, 0.25, 3]],
    [bias.name, [-0.5, 2, -1, 0.25, 0.5]],
  ]),
  new Map([
    [matrix.name, [0.25, 1, -2, 0.5, 1, -1, 0.5, 2, -0.25, 1]],
    [bias.name, [2, 0.5, 0.5, -1, 0.25]],
  ]),
];
/** Model j's tensor: base + delta, in float32 (the task vectors below are exact: every value is a short binary fraction). */
const model = (j: number, name: string) => Float32Array.from(base.get(name)!, (b, e) => b + deltas[j]!.get(name)![e]!);
const taskVector = (j: number, name: string) => Float64Array.from(model(j, name), (v, e) => v - base.get(name)![e]!);

interface Merge {
  models?: number;
  params?: Params;
  modelParams?: Params[];
  lambdas?: number[];
  withBase?: boolean;
}
function merge(method: string, { models = 2, params, modelParams, lambdas, withBase = true }: Merge = {}): Map<string, Float32Array> {
  return mergeEncoders({
    slots, models, rule: resolveRule(method), params, modelParams, lambdas,
    tensor: (j, slot) => model(j, slot.name),
    base: withBase ? (slot) => base.get(slot.name)! : undefined,
  });
}

function expectClose(got: Float32Array, want: ArrayLike<number>, label: string): void {
  expect(got.length, label).toBe(want.length);
  for (let e = 0; e < got.length; e++) if (!(Math.abs(got[e]! - want[e]!) <= 1e-6 * (1 + Math.abs(want[e]!)))) expect.fail(`${label}[${e}]: got ${got[e]}, want ${want[e]}`);
}
const expectSame = (a: Map<string, Float32Array>, b: Map<string, Float32Array>, label: string) => {
  for (const slot of slots) expect(Array.from(a.get(slot.name)!), `${label} ${slot.name}`).toEqual(Array.from(b.get(slot.name)!));
};

/** Ranks of |t| from the largest down, equal magnitudes lowest index first. */
function ranksFromLargest(t: ArrayLike<number>): number[] {
  const order = Array.from(t, (_, e) => e).sort((a, b) => Math.abs(t[b]!) - Math.abs(t[a]!) || a - b);
  const rank = new Array<number>(t.length);
  order.forEach((e, r) => (rank[e] = r));
  return rank;
}

/** Breadcrumbs: keep the ranks [top, top + kept), kept = floor(density n), top = min(floor(gamma n), n - kept). */
function breadcrumbsOf(t: ArrayLike<number>, density: number, gamma: number): number[] {
  if (density >= 1) return Array.from(t);
  const n = t.length, kept = Math.floor(density * n), top = Math.min(Math.floor(gamma * n), n - kept);
  const rank = ranksFromLargest(t);
  return Array.from(t, (v, e) => (rank[e]! >= top && rank[e]! < top + kept ? v : 0));
}

/** TIES's sign election and mean of the agreeing entries, weighted by lambda. */
function consensusOf(values: readonly number[], lambdas: readonly number[]): number {
  const s = Math.sign(values.reduce((a, v, j) => a + lambdas[j]! * v, 0));
  let num = 0, den = 0;
  values.forEach((v, j) => {
    if (Math.sign(v) === s) [num, den] = [num + lambdas[j]! * v, den + lambdas[j]!];
  });
  return den === 0 ? num : num / den;
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, e) => s + v * b[e]!, 0);

describe('breadcrumbs', () => {
  it('drops the largest gamma share and the smallest entries by |t|, keeping floor(density n) (worked by hand)', () => {
    // |t| from the largest: 4 (e7), 3 (e1), 2 (e4), 1.5 (e6), 1 (e2), 0.75 (e9), 0.5 (e0), 0.375 (e8), ...
    // density 0.5, gamma 0.1 of 10: the largest one (e7) goes, the next five stay.
    const t = Float32Array.from(deltas[0]!.get(matrix.name)!);
    expect(Array.from(keepBreadcrumbs(t, 0.5, 0.1))).toEqual([0, -3, 1, 0, 2, 0, -1.5, 0, 0, -0.75]);
    // Equal magnitudes take their ranks lowest index first: ranks 1 and 2 are e1 and e2.
    expect(Array.from(keepBreadcrumbs(Float32Array.of(1, -1, 1, 1), 0.5, 0.25))).toEqual([0, -1, 1, 0]);
    // gamma gives way where the kept count needs its entries: 9 of 10 kept leaves 1 to drop, from the top.
    expect(Array.from(keepBreadcrumbs(t, 0.95, 0.5))).toEqual(breadcrumbsOf(t, 0.95, 0.5));
    expect(keepBreadcrumbs(t, 0.95, 0.5).filter((v) => v !== 0)).toHaveLength(9);
    for (const [density, gamma] of [[0.3, 0], [0.5, 0.2], [0.7, 0.3], [0.1, 0.9]] as const) {
      expect(Array.from(keepBreadcrumbs(t, density, gamma)), `${density} ${gamma}`).toEqual(breadcrumbsOf(t, density, gamma));
    }
  });

  it('gamma 0 is magnitude pruning (TIES trim); density 1 keeps everything', () => {
    const t = Float32Array.from(deltas[1]!.get(matrix.name)!);
    for (const density of [0.1, 0.3, 0.5, 0.9]) expect(Array.from(keepBreadcrumbs(t, density, 0))).toEqual(Array.from(keepTopMagnitude(t, density)));
    expect(keepBreadcrumbs(t, 1, 0.3)).toBe(t);
    expectSame(merge('breadcrumbs-ties', { params: { density: 0.4, gamma: 0 } }), merge('ties', { params: { density: 0.4 } }), 'gamma 0');
    expectSame(merge('breadcrumbs', { params: { density: 1 }, lambdas: [0.5, 2] }), merge('task-arithmetic', { lambdas: [0.5, 2] }), 'density 1');
    expectSame(merge('breadcrumbs-ties', { params: { density: 1 } }), merge('ties'), 'density 1');
  });

  it('breadcrumbs adds scale * sum_j lambda_j mask_j(t_j) to the base; breadcrumbs-ties the consensus mean', () => {
    const lambdas = [0.5, 1.5, 1];
    const modelParams: Params[] = [{ density: 0.6, gamma: 0.1 }, { density: 0.4 }, { gamma: 0.3 }];
    const params = { density: 0.5, gamma: 0.2, scale: 0.8 };
    const linear = merge('breadcrumbs', { models: 3, params, modelParams, lambdas });
    const ties = merge('breadcrumbs-ties', { models: 3, params, modelParams, lambdas });
    const own = [[0.6, 0.1], [0.4, 0.2], [0.5, 0.3]];
    for (const slot of slots) {
      const masked = own.map(([density, gamma], j) => breadcrumbsOf(taskVector(j, slot.name), density!, gamma!));
      const b = base.get(slot.name)!;
      expectClose(linear.get(slot.name)!, Array.from(b, (v, e) => v + 0.8 * masked.reduce((s, m, j) => s + lambdas[j]! * m[e]!, 0)), `breadcrumbs ${slot.name}`);
      expectClose(ties.get(slot.name)!, Array.from(b, (v, e) => v + 0.8 * consensusOf(masked.map((m) => m[e]!), lambdas)), `breadcrumbs-ties ${slot.name}`);
    }
  });
});

describe('della', () => {
  /** Keep probabilities: density - epsilon + 2 epsilon r / (R - 1) for rank r from the smallest |t| of its row of R. */
  function dellaProbabilities(t: ArrayLike<number>, rowSize: number, density: number, epsilon: number): number[] {
    const p = new Array<number>(t.length);
    for (let row = 0; row < t.length; row += rowSize) {
      const inRow = Array.from({ length: rowSize }, (_, i) => Math.abs(t[row + i]!));
      inRow.forEach((m, i) => {
        // Rank from the smallest |t|, equal magnitudes lowest index first.
        const r = inRow.filter((v, k) => v < m || (v === m && k < i)).length;
        p[row + i] = rowSize > 1 ? density - epsilon + (2 * epsilon * r) / (rowSize - 1) : density;
      });
    }
    return p;
  }

  it('keeps an entry when its draw is below its rank probability and divides it by that probability (worked by hand)', () => {
    // Row 0 |t| = 0.5, 3, 1, 0.25, 2: ranks from the smallest 1, 4, 2, 0, 3; density 0.5, epsilon 0.2
    // gives p = 0.3 + 0.1 r: 0.4, 0.7, 0.5, 0.3, 0.6.
    const t = Float32Array.from(deltas[0]!.get(matrix.name)!);
    const p = dellaProbabilities(t, 5, 0.5, 0.2);
    expect(p.slice(0, 5).map((v) => Number(v.toFixed(12)))).toEqual([0.4, 0.7, 0.5, 0.3, 0.6]);
    const random = new SeededRandom(42);
    const draws = Array.from(t, () => random.next());
    const got = magnitudeRankDrop(t, [2, 5], 0.5, 0.2, new SeededRandom(42));
    expectClose(got, Array.from(t, (v, e) => (draws[e]! < p[e]! ? v / p[e]! : 0)), 'magnitudeRankDrop');
    // A vector is one row.
    const b = Float32Array.from(deltas[1]!.get(bias.name)!);
    const pb = dellaProbabilities(b, 5, 0.4, 0.1);
    const rb = new SeededRandom(7);
    expectClose(magnitudeRankDrop(b, [5], 0.4, 0.1, new SeededRandom(7)), Array.from(b, (v, e) => (rb.next() < pb[e]! ? v / pb[e]! : 0)), 'bias');
  });

  it("della-linear and della draw each model's tensor from DARE's seeded streams", () => {
    const params = { density: 0.5, epsilon: 0.2, seed: 3 };
    const lambdas = [0.75, 1.25];
    const linear = merge('della-linear', { params, lambdas });
    const ties = merge('della', { params, lambdas });
    for (const slot of slots) {
      const rowSize = slot.shape.length > 1 ? slot.shape[1]! : slot.shape[0]!;
      const dropped = [0, 1].map((j) => {
        const t = taskVector(j, slot.name);
        const p = dellaProbabilities(t, rowSize, 0.5, 0.2);
        const random = new SeededRandom(dropSeed(3, j, slot.name));
        return Array.from(t, (v, e) => (random.next() < p[e]! ? Math.fround(v / p[e]!) : 0));
      });
      const b = base.get(slot.name)!;
      expectClose(linear.get(slot.name)!, Array.from(b, (v, e) => v + lambdas[0]! * dropped[0]![e]! + lambdas[1]! * dropped[1]![e]!), `della-linear ${slot.name}`);
      expectClose(ties.get(slot.name)!, Array.from(b, (v, e) => v + consensusOf([dropped[0]![e]!, dropped[1]![e]!], lambdas)), `della ${slot.name}`);
    }
  });

  it('epsilon 0 is DARE with the same seed; density 1 is the plain rule', () => {
    const params = { density: 0.6, seed: 5 };
    expectSame(merge('della-linear', { params: { ...params, epsilon: 0 } }), merge('dare-linear', { params }), 'della-linear epsilon 0');
    expectSame(merge('della', { params: { ...params, epsilon: 0 } }), merge('dare-ties', { params }), 'della epsilon 0');
    expectSame(merge('della-linear', { lambdas: [2, 0.5] }), merge('task-arithmetic', { lambdas: [2, 0.5] }), 'della-linear density 1');
    expectSame(merge('della'), merge('ties'), 'della density 1');
  });

  it('refuses keep probabilities outside (0, 1) in one line naming the model', () => {
    expect(() => merge('della', { params: { density: 0.9, epsilon: 0.15 } })).toThrow("parameters of model 1 of 'della': density - epsilon and density + epsilon must lie in (0, 1), got density 0.9 and epsilon 0.15");
    expect(() => merge('della-linear', { modelParams: [{}, { density: 0.1 }], params: { density: 0.5 } })).toThrow(/model 2 of 'della-linear'.*density 0.1 and epsilon 0.15/);
    expect(() => merge('della', { params: { epsilon: 0.5 } })).toThrow(/'epsilon' of 'della' must be a number in \[0, 0.5\), got 0.5/);
  });
});

describe('model-stock', () => {
  /** base + t * mean_lambda(t_j), t = N c / (1 + (N - 1) c), c the mean pairwise cosine of the whole tensor. */
  function modelStockOf(tvs: Float64Array[], b: Float32Array, lambdas: number[]): number[] {
    const N = tvs.length;
    const cosines: number[] = [];
    for (let i = 0; i < N; i++) for (let j = i + 1; j < N; j++) cosines.push(dot(tvs[i]!, tvs[j]!) / Math.sqrt(dot(tvs[i]!, tvs[i]!) * dot(tvs[j]!, tvs[j]!)));
    const c = cosines.reduce((a, v) => a + v, 0) / cosines.length;
    const t = (N * c) / (1 + (N - 1) * c);
    const total = lambdas.reduce((a, v) => a + v, 0);
    return Array.from(b, (v, e) => v + (t * tvs.reduce((s, tv, j) => s + lambdas[j]! * tv[e]!, 0)) / total);
  }

  it('orthogonal task vectors give the base, a 45-degree pair t = 2c / (1 + c) (worked by hand)', () => {
    const rule = resolveRule('model-stock');
    const slot: TensorSlot = { name: 'pooler.dense.bias', role: 'pooler', param: 'bias', shape: [2] };
    const b = Float32Array.of(1, 2);
    const run = (a: number[], c: number[]) => mergeEncoders({ slots: [slot], models: 2, rule, tensor: (j) => Float32Array.from(j ? c : a, (v, e) => v + b[e]!), base: () => b }).get(slot.name)!;
    expectClose(run([1, 0], [0, 3]), [1, 2], 'orthogonal');
    // cos 45 degrees = 1/sqrt 2, t = sqrt 2 / (1 + 1/sqrt 2) = 2 / (sqrt 2 + 1); mean task vector (1, 0.5).
    const t = 2 / (Math.SQRT2 + 1);
    expectClose(run([1, 0], [1, 1]), [1 + t, 2 + 0.5 * t], '45 degrees');
    // Parallel task vectors: t = 1, the plain mean.
    expectClose(run([1, 2], [2, 4]), [2.5, 5], 'parallel');
  });

  it('matches its formula per tensor for three weighted models; one model returns itself', () => {
    const lambdas = [1, 2, 0.5];
    const merged = merge('model-stock', { models: 3, lambdas });
    for (const slot of slots) expectClose(merged.get(slot.name)!, modelStockOf([0, 1, 2].map((j) => taskVector(j, slot.name)), base.get(slot.name)!, lambdas), slot.name);
    const single = merge('model-stock', { models: 1 });
    for (const slot of slots) expectClose(single.get(slot.name)!, model(0, slot.name), `single ${slot.name}`);
  });
});

describe('slerp', () => {
  it('interpolates on the great circle between two vectors (worked by hand)', () => {
    const rule = resolveRule('slerp');
    const slot: TensorSlot = { name: 'pooler.dense.bias', role: 'pooler', param: 'bias', shape: [2] };
    const run = (a: number[], c: number[], t: number) => mergeEncoders({ slots: [slot], models: 2, rule, params: { t }, tensor: (j) => Float32Array.from(j ? c : a) }).get(slot.name)!;
    // Unit vectors 90 degrees apart: sin(45)/sin(90) of each at t = 0.5.
    expectClose(run([1, 0], [0, 1], 0.5), [Math.SQRT1_2, Math.SQRT1_2], 'quarter circle');
    // 2 and 1 in length, 90 degrees: sin((1-t) 90) and sin(t 90) of the originals at t = 1/3.
    expectClose(run([2, 0], [0, 1], 1 / 3), [2 * Math.sin(Math.PI / 3), Math.sin(Math.PI / 6)], 'lengths kept');
    // Nearly colinear directions (cosine > 0.9995): linear interpolation.
    expectClose(run([1, 0], [3, 0.01], 0.25), [1.5, 0.0025], 'colinear');
  });

  it('t = 0 and t = 1 give the two models; with a base it interpolates their task vectors', () => {
    for (const withBase of [false, true]) {
      const [first, second] = [0, 1].map((t) => merge('slerp', { params: { t }, withBase }));
      for (const slot of slots) {
        for (const [got, j] of [[first!, 0], [second!, 1]] as const) {
          if (withBase) expectClose(got.get(slot.name)!, model(j, slot.name), `base t=${j} ${slot.name}`);
          else expect(Array.from(got.get(slot.name)!), `t=${j} ${slot.name}`).toEqual(Array.from(model(j, slot.name)));
        }
      }
    }
    const merged = merge('slerp', { params: { t: 0.3 } });
    for (const slot of slots) {
      const [v0, v1] = [0, 1].map((j) => taskVector(j, slot.name));
      const theta = Math.acos(dot(v0!, v1!) / Math.sqrt(dot(v0!, v0!) * dot(v1!, v1!)));
      const [s0, s1] = [Math.sin(0.7 * theta) / Math.sin(theta), Math.sin(0.3 * theta) / Math.sin(theta)];
      expectClose(merged.get(slot.name)!, Array.from(base.get(slot.name)!, (b, e) => b + s0 * v0![e]! + s1 * v1![e]!), slot.name);
    }
  });

  it('merges exactly two models', () => {
    expect(() => merge('slerp', { models: 3 })).toThrow("merge method 'slerp' merges exactly 2 models, got 3");
    expect(() => merge('slerp', { params: { t: 1.5 } })).toThrow(/'t' of 'slerp' must be a number in \[0, 1\], got 1.5/);
  });
});

describe('magmax', () => {
  it('takes per entry the task-vector value of largest magnitude, the later model on ties (worked by hand)', () => {
    const merged = merge('magmax', { models: 3, params: { scale: 0.5 } });
    // Bias task vectors: (1, -1, 1, 1, 0.5), (-0.5, 2, -1, 0.25, 0.5), (2, 0.5, 0.5, -1, 0.25):
    // largest |t| 2, 2, 1 (models 1 and 2 tie: the later, -1), 1 (models 1 and 3 tie: the later, -1), 0.5 (tie: 0.5).
    expectClose(merged.get(bias.name)!, Array.from(base.get(bias.name)!, (b, e) => b + 0.5 * [2, 2, -1, -1, 0.5][e]!), 'bias');
    const tvs = [0, 1, 2].map((j) => taskVector(j, matrix.name));
    const largest = Array.from(tvs[0]!, (_, e) => tvs.map((t) => t[e]!).reduce((best, v) => (Math.abs(v) >= Math.abs(best) ? v : best)));
    expectClose(merged.get(matrix.name)!, Array.from(base.get(matrix.name)!, (b, e) => b + 0.5 * largest[e]!), 'matrix');
  });

  it('of one task vector is that task vector; lambdas do not count', () => {
    const single = merge('magmax', { models: 1 });
    for (const slot of slots) expectClose(single.get(slot.name)!, model(0, slot.name), slot.name);
    expectSame(merge('magmax', { lambdas: [3, 0.5] }), merge('magmax'), 'lambdas');
  });
});
