/** GLUE metrics with the definitions of scikit-learn / scipy that Hugging Face's `evaluate` uses. */

export function accuracy(predictions: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkLengths(predictions, labels);
  let correct = 0;
  for (let i = 0; i < labels.length; i++) if (predictions[i] === labels[i]) correct++;
  return correct / labels.length;
}

/** Binary F1 of the positive class 1 (sklearn's f1_score default); 0 when there are no true positives. */
export function f1(predictions: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkLengths(predictions, labels);
  let tp = 0, fp = 0, fn = 0;
  for (let i = 0; i < labels.length; i++) {
    if (predictions[i] === 1 && labels[i] === 1) tp++;
    else if (predictions[i] === 1) fp++;
    else if (labels[i] === 1) fn++;
  }
  return tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
}

/** Matthews correlation, multiclass form (sklearn's matthews_corrcoef); 0 when undefined. */
export function matthews(predictions: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkLengths(predictions, labels);
  const classes = [...new Set([...Array.from(predictions), ...Array.from(labels)])];
  const index = new Map(classes.map((c, i) => [c, i]));
  const k = classes.length;
  const confusion = new Float64Array(k * k);
  for (let i = 0; i < labels.length; i++) confusion[index.get(labels[i])! * k + index.get(predictions[i])!]++;
  const t = new Float64Array(k); // true counts per class
  const p = new Float64Array(k); // predicted counts per class
  let correct = 0;
  for (let a = 0; a < k; a++) {
    correct += confusion[a * k + a];
    for (let b = 0; b < k; b++) {
      t[a] += confusion[a * k + b];
      p[b] += confusion[a * k + b];
    }
  }
  const n = labels.length;
  let tp = 0, tt = 0, pp = 0;
  for (let a = 0; a < k; a++) {
    tp += t[a] * p[a];
    tt += t[a] * t[a];
    pp += p[a] * p[a];
  }
  const denom = Math.sqrt((n * n - pp) * (n * n - tt));
  return denom === 0 ? 0 : (correct * n - tp) / denom;
}

export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkLengths(x, y);
  const n = x.length;
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return sxx === 0 || syy === 0 ? Number.NaN : sxy / Math.sqrt(sxx * syy);
}

/** Spearman's rho: Pearson correlation of ranks, ties given their average rank (scipy.stats.spearmanr). */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  return pearson(ranks(x), ranks(y));
}

function ranks(values: ArrayLike<number>): Float64Array {
  const order = Array.from({ length: values.length }, (_, i) => i).sort((a, b) => values[a] - values[b]);
  const out = new Float64Array(values.length);
  for (let start = 0; start < order.length; ) {
    let end = start;
    while (end + 1 < order.length && values[order[end + 1]] === values[order[start]]) end++;
    const rank = (start + end) / 2 + 1;
    for (let i = start; i <= end; i++) out[order[i]] = rank;
    start = end + 1;
  }
  return out;
}

function checkLengths(a: ArrayLike<number>, b: ArrayLike<number>): void {
  if (a.length !== b.length) throw new Error(`metric inputs differ in length: ${a.length} vs ${b.length}`);
  if (a.length === 0) throw new Error('metric of an empty set');
}

export type MetricName = 'accuracy' | 'f1' | 'matthews_correlation' | 'pearson' | 'spearmanr';

/** Which metrics GLUE reports per task, keyed as Hugging Face's `evaluate` names them. */
export const GLUE_METRICS: Record<string, MetricName[]> = {
  sst2: ['accuracy'],
  rte: ['accuracy'],
  qnli: ['accuracy'],
  mnli: ['accuracy'],
  wnli: ['accuracy'],
  mrpc: ['accuracy', 'f1'],
  qqp: ['accuracy', 'f1'],
  cola: ['accuracy', 'matthews_correlation'],
  stsb: ['pearson', 'spearmanr'],
};

/**
 * The one number a task is judged by (a results table's column, the stream gate's default): GLUE's
 * first metric, accuracy, except cola (Matthews) and stsb (Spearman), whose headline is not their first.
 */
export const PRIMARY_METRIC: Record<string, MetricName> = {
  sst2: 'accuracy', rte: 'accuracy', qnli: 'accuracy', mnli: 'accuracy', wnli: 'accuracy',
  mrpc: 'accuracy', qqp: 'accuracy', cola: 'matthews_correlation', stsb: 'spearmanr',
};

/** The index of the largest value (the first on ties). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let c = 1; c < values.length; c++) if (values[c]! > values[best]!) best = c;
  return best;
}

/** Class probabilities from one example's logits, in float64 and shifted by the max so exp cannot overflow. */
export function softmax(logits: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let c = 0; c < logits.length; c++) max = Math.max(max, logits[c]!);
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** Computes metrics from logits [n, numLabels] (argmax, or the single value for regression). */
export function computeMetrics(names: readonly MetricName[], logits: Float32Array, numLabels: number, labels: ArrayLike<number>): Record<string, number> {
  const n = labels.length;
  const predictions = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (numLabels === 1) {
      predictions[i] = logits[i];
      continue;
    }
    predictions[i] = argmax(logits.subarray(i * numLabels, (i + 1) * numLabels));
  }
  const fns: Record<MetricName, (p: ArrayLike<number>, l: ArrayLike<number>) => number> = {
    accuracy, f1, matthews_correlation: matthews, pearson, spearmanr: spearman,
  };
  return Object.fromEntries(names.map((name) => [name, fns[name](predictions, labels)]));
}
