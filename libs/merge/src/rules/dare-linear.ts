import { DENSITY, SCALE, SEED, type MergeRule } from '../rule.ts';
import { addToBase, droppedTaskVectors } from '../task-vectors.ts';
import { weightedSum } from '../weighted-average.ts';

export const dareLinear: MergeRule = {
  name: 'dare-linear',
  summary: 'DARE (Yu et al.): drop each task-vector entry with probability 1 - density, rescale the kept by 1/density, add the lambda-weighted sum to the base.',
  params: [DENSITY, SEED, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => addToBase(weightedSum(droppedTaskVectors(input, Number(params.seed)), input.weights), input.base, Number(params.scale)),
};
