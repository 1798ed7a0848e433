import { SCALE, type MergeRule } from '../rule.ts';
import { addToBase, taskVectors } from '../task-vectors.ts';
import { weightedSum } from '../weighted-average.ts';

export const taskArithmetic: MergeRule = {
  name: 'task-arithmetic',
  summary: 'base + scale * sum_j lambda_j (theta_j - base) (Ilharco et al.).',
  params: [SCALE],
  needs: { stats: [], base: true },
  prepare: ({ params }) => ({ tensors, base, weights }) => addToBase(weightedSum(taskVectors(tensors, base), weights), base, Number(params.scale)),
};
