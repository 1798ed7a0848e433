import { DENSITY, GAMMA, SCALE, type MergeRule } from '../rule.ts';
import { breadcrumbTaskVectors, summedToBase } from '../task-vectors.ts';

export const breadcrumbs: MergeRule = {
  name: 'breadcrumbs',
  summary: 'Model Breadcrumbs (Davari & Belilovsky): drop the largest gamma share and the smallest of each task vector by |t|, keeping density, add the lambda-weighted sum to the base.',
  params: [DENSITY, GAMMA, SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => summedToBase(breadcrumbTaskVectors(input), input, Number(params.scale)),
};
