import { UserError } from '@fisher-merge/core';

/**
 * How much one model's tensor counts in a merge: a scalar for the whole tensor, one value per row
 * (the first axis: a head's or a neuron's rows of a PyTorch Linear weight, or its bias entries), or
 * one value per element (diagonal Fisher).
 */
export type TensorWeight = number | { perRow: Float64Array } | { perElement: Float32Array | Float64Array };

export function weightAt(w: TensorWeight, element: number, rowSize: number): number {
  if (typeof w === 'number') return w;
  if ('perRow' in w) return w.perRow[Math.floor(element / rowSize)];
  return w.perElement[element];
}

/** Elements per row of the first axis (1 for a vector). */
export const rowSizeOf = (n: number, shape: readonly number[]): number => (shape.length > 1 ? n / shape[0] : 1);

/** Every model counts the same (before its weight). */
export const uniformWeights = (models: number): TensorWeight[] => Array.from({ length: models }, () => 1);

/**
 * theta* = sum_j lambda_j w_j theta_j / sum_j lambda_j w_j, element-wise, in float64. Where every
 * weight is 0 the models count equally (by lambda alone).
 */
export function weightedAverage(thetas: readonly Float32Array[], weights: readonly TensorWeight[], lambdas: readonly number[], shape: readonly number[]): Float32Array {
  const n = thetas[0].length;
  const rowSize = rowSizeOf(n, shape);
  const out = new Float32Array(n);
  const models = thetas.length;
  const lambdaSum = lambdas.reduce((a, b) => a + b, 0);
  if (lambdaSum === 0) throw new UserError('the model weights (--lambda) are all 0: nothing to average');
  for (let e = 0; e < n; e++) {
    let num = 0;
    let den = 0;
    let plain = 0;
    for (let j = 0; j < models; j++) {
      const w = lambdas[j] * weightAt(weights[j], e, rowSize);
      num += w * thetas[j][e];
      den += w;
      plain += lambdas[j] * thetas[j][e];
    }
    out[e] = den !== 0 ? num / den : plain / lambdaSum;
  }
  return out;
}

/** sum_j lambda_j theta_j, element-wise, in float64. */
export function weightedSum(thetas: readonly Float32Array[], lambdas: readonly number[]): Float32Array {
  const out = new Float32Array(thetas[0].length);
  for (let e = 0; e < out.length; e++) {
    let s = 0;
    for (let j = 0; j < thetas.length; j++) s += lambdas[j] * thetas[j][e];
    out[e] = s;
  }
  return out;
}
