import type { MergeRule } from '../rule.ts';
import { addToBase, dot, taskVectors } from '../task-vectors.ts';
import { uniformWeights, weightedAverage } from '../weighted-average.ts';

/**
 * Model Stock's interpolation ratio (mergekit's model_stock, per tensor): with c the mean over pairs
 * of the task vectors' cosines (norm products floored at 1e-6, cosines clamped to [-1, 1]),
 * t = N c / (1 + (N - 1) c); 1 for a single model, 0 where the denominator is 0.
 */
export function modelStockRatio(tvs: readonly Float32Array[]): number {
  const N = tvs.length;
  if (N === 1) return 1;
  const norms = tvs.map((t) => Math.sqrt(dot(t, t)));
  let sum = 0;
  for (let i = 0; i < N; i++) for (let j = i + 1; j < N; j++) sum += Math.min(1, Math.max(-1, dot(tvs[i], tvs[j]) / Math.max(norms[i] * norms[j], 1e-6)));
  const c = sum / ((N * (N - 1)) / 2);
  const denominator = 1 + (N - 1) * c;
  return denominator === 0 ? 0 : (N * c) / denominator;
}

export const modelStock: MergeRule = {
  name: 'model-stock',
  summary: "Model Stock (Jang et al.; mergekit's model_stock): base + t (lambda-weighted mean of the task vectors), t from their mean pairwise cosine per tensor.",
  params: [],
  needs: { stats: [], base: true },
  prepare: () => ({ slot, tensors, base, weights }) => {
    const tvs = taskVectors(tensors, base);
    return addToBase(weightedAverage(tvs, uniformWeights(tvs.length), weights, slot.shape), base, modelStockRatio(tvs));
  },
};
