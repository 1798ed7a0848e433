import { DENSITY, EPSILON, SCALE, SEED, type MergeRule } from '../rule.ts';
import { checkDellaProbabilities, consensusToBase, dellaTaskVectors } from '../task-vectors.ts';

export const della: MergeRule = {
  name: 'della',
  summary: "DELLA (Deep et al.; mergekit's della): MagPrune, each entry kept with a probability that grows with its |t| rank in its row and rescaled by it, then TIES's sign consensus and mean.",
  params: [DENSITY, EPSILON, SEED, SCALE],
  needs: { stats: [], base: true },
  prepare({ params, modelParams }) {
    checkDellaProbabilities('della', modelParams);
    return (input) => consensusToBase(dellaTaskVectors(input, Number(params.seed)), input, Number(params.scale));
  },
};
