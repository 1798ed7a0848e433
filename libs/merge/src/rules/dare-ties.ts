import { DENSITY, SCALE, SEED, type MergeRule } from '../rule.ts';
import { addToBase, droppedTaskVectors, signConsensusMean } from '../task-vectors.ts';
import { uniformWeights } from '../weighted-average.ts';

export const dareTies: MergeRule = {
  name: 'dare-ties',
  summary: "DARE's seeded random drop and rescale in place of TIES's trim, then TIES's sign consensus and mean of the agreeing entries.",
  params: [DENSITY, SEED, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => {
    const { slot, tensors, base, weights } = input;
    return addToBase(signConsensusMean(droppedTaskVectors(input, Number(params.seed)), uniformWeights(tensors.length), weights, slot.shape), base, Number(params.scale));
  },
};
