import { DENSITY, SCALE, type MergeRule } from '../rule.ts';
import { addToBase, signConsensusMean, trimmedTaskVectors } from '../task-vectors.ts';
import { uniformWeights } from '../weighted-average.ts';

export const ties: MergeRule = {
  name: 'ties',
  summary: "TIES (Yadav et al.; mergekit's ties, normalize: true): trim each task vector to its largest-|t| density fraction, elect signs, average the agreeing entries.",
  params: [DENSITY, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => {
    const { slot, tensors, base, weights } = input;
    return addToBase(signConsensusMean(trimmedTaskVectors(input), uniformWeights(tensors.length), weights, slot.shape), base, Number(params.scale));
  },
};
