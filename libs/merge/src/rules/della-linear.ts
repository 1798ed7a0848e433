import { DENSITY, EPSILON, SCALE, SEED, type MergeRule } from '../rule.ts';
import { checkDellaProbabilities, dellaTaskVectors, summedToBase } from '../task-vectors.ts';

export const dellaLinear: MergeRule = {
  name: 'della-linear',
  summary: "DELLA's MagPrune (keep probability by |t| rank within a row, kept entries rescaled by it), then the lambda-weighted sum added to the base.",
  params: [DENSITY, EPSILON, SEED, SCALE],
  needs: { stats: [], base: true },
  prepare({ params, modelParams }) {
    checkDellaProbabilities('della-linear', modelParams);
    return (input) => summedToBase(dellaTaskVectors(input, Number(params.seed)), input, Number(params.scale));
  },
};
