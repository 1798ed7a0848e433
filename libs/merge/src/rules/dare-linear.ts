import { DENSITY, SCALE, SEED, type MergeRule } from '../rule.ts';
import { droppedTaskVectors, summedToBase } from '../task-vectors.ts';

export const dareLinear: MergeRule = {
  name: 'dare-linear',
  summary: 'DARE (Yu et al.): drop each task-vector entry with probability 1 - density, rescale the kept by 1/density, add the lambda-weighted sum to the base.',
  params: [DENSITY, SEED, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => summedToBase(droppedTaskVectors(input, Number(params.seed)), input, Number(params.scale)),
};
