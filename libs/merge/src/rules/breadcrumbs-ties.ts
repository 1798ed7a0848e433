import { DENSITY, GAMMA, SCALE, type MergeRule } from '../rule.ts';
import { breadcrumbTaskVectors, consensusToBase } from '../task-vectors.ts';

export const breadcrumbsTies: MergeRule = {
  name: 'breadcrumbs-ties',
  summary: "Breadcrumbs' mask in place of TIES's trim, then TIES's sign consensus and mean of the agreeing entries.",
  params: [DENSITY, GAMMA, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => consensusToBase(breadcrumbTaskVectors(input), input, Number(params.scale)),
};
