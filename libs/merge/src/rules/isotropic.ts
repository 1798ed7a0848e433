import type { MergeRule } from '../rule.ts';
import { addToBase, taskVectors } from '../task-vectors.ts';
import { uniformWeights, weightedAverage } from '../weighted-average.ts';

export const isotropic: MergeRule = {
  name: 'isotropic',
  summary: 'Plain (lambda-weighted) average of the encoders.',
  params: [],
  needs: { stats: [], base: false },
  prepare: () => ({ slot, tensors, base, weights }) => addToBase(weightedAverage(taskVectors(tensors, base), uniformWeights(tensors.length), weights, slot.shape), base),
};
