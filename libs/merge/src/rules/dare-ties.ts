import { DENSITY, SCALE, SEED, type MergeRule } from '../rule.ts';
import { consensusToBase, droppedTaskVectors } from '../task-vectors.ts';

export const dareTies: MergeRule = {
  name: 'dare-ties',
  summary: "DARE's seeded random drop and rescale in place of TIES's trim, then TIES's sign consensus and mean of the agreeing entries.",
  params: [DENSITY, SEED, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => consensusToBase(droppedTaskVectors(input, Number(params.seed)), input, Number(params.scale)),
};
