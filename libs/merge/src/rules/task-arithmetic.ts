import { SCALE, type MergeRule } from '../rule.ts';
import { summedToBase, taskVectors } from '../task-vectors.ts';

export const taskArithmetic: MergeRule = {
  name: 'task-arithmetic',
  summary: 'base + scale * sum_j lambda_j (theta_j - base) (Ilharco et al.).',
  params: [SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => (input) => summedToBase(taskVectors(input.tensors, input.base), input, Number(params.scale)),
};
