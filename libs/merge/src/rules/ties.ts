import { DENSITY, SCALE, type MergeRule } from '../rule.ts';
import { consensusToBase, trimmedTaskVectors } from '../task-vectors.ts';

export const ties: MergeRule = {
  name: 'ties',
  summary: "TIES (Yadav et al.; mergekit's ties, normalize: true): trim each task vector to its largest-|t| density fraction, elect signs, average the agreeing entries.",
  params: [DENSITY, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => consensusToBase(trimmedTaskVectors(input), input, Number(params.scale)),
};
