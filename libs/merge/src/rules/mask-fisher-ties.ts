import { maskFisherSlotWeights, MASK_FISHER_PARAMS } from '../mask-fisher-weights.ts';
import { DENSITY, SCALE, type MergeRule } from '../rule.ts';
import { addToBase, signConsensusMean, trimmedTaskVectors } from '../task-vectors.ts';

export const maskFisherTies: MergeRule = {
  name: 'mask-fisher-ties',
  summary: "TIES with the paper's mask-node Fisher weights (times lambda) in place of w_j in the sign election and the mean of the agreeing entries.",
  params: [DENSITY, SCALE, ...MASK_FISHER_PARAMS],
  needs: { stats: ['maskFisher'], base: true },
  prepare({ stats, params }) {
    const weightsOf = maskFisherSlotWeights(stats.maskFisher!, params);
    return (input) => addToBase(signConsensusMean(trimmedTaskVectors(input), weightsOf(input.slot), input.weights, input.slot.shape), input.base, Number(params.scale));
  },
};
