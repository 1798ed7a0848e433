import { maskFisherSlotWeights, MASK_FISHER_PARAMS } from '../mask-fisher-weights.ts';
import type { MergeRule } from '../rule.ts';
import { addToBase, taskVectors } from '../task-vectors.ts';
import { weightedAverage } from '../weighted-average.ts';

export const maskFisher: MergeRule = {
  name: 'mask-fisher',
  summary: "Fisher of attention-head and FFN-neuron mask nodes (the paper's rule).",
  params: MASK_FISHER_PARAMS,
  needs: { stats: ['maskFisher'], base: false },
  prepare({ stats, params }) {
    const weightsOf = maskFisherSlotWeights(stats.maskFisher!, params);
    return ({ slot, tensors, base, weights }) => addToBase(weightedAverage(taskVectors(tensors, base), weightsOf(slot), weights, slot.shape), base);
  },
};
