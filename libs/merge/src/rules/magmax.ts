import { SCALE, type MergeRule } from '../rule.ts';
import { addToBase, maxMagnitude, taskVectors } from '../task-vectors.ts';

export const magmax: MergeRule = {
  name: 'magmax',
  summary: "MagMax (Marczak et al.; FusionBench's magmax): per entry the task-vector value of largest magnitude (the later model on ties), scaled and added to the base; lambdas are not used.",
  params: [SCALE],
  needs: { stats: [], base: true },
  weighted: false,
  prepare: ({ params }) => ({ tensors, base }) => addToBase(maxMagnitude(taskVectors(tensors, base)), base, Number(params.scale)),
};
