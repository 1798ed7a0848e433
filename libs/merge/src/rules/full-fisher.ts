import type { MergeRule } from '../rule.ts';
import { addToBase, taskVectors } from '../task-vectors.ts';
import { weightedAverage } from '../weighted-average.ts';

export const fullFisher: MergeRule = {
  name: 'full-fisher',
  summary: 'Diagonal Fisher of every parameter (Matena & Raffel).',
  params: [
    { name: 'epsilon', type: 'number', default: 1e-8, help: 'added to every Fisher value (the fixtures\' reference)' },
    { name: 'floor', type: 'number', default: 0, help: 'lower bound on every Fisher value (Matena & Raffel\'s code: 1e-6)' },
    { name: 'l2-normalize', type: 'boolean', default: false, help: "divide each model's Fisher by its L2 norm over all encoder parameters" },
  ],
  needs: { stats: ['fullFisher'], base: false },
  prepare({ stats, params, slots }) {
    const fishers = stats.fullFisher!;
    const epsilon = Number(params.epsilon);
    const floor = Number(params.floor);
    // L2 normalisation divides each model's Fisher by its norm over every merged tensor.
    const scales = fishers.map((get) => {
      if (params['l2-normalize'] !== true) return 1;
      let squares = 0;
      for (const slot of slots) for (const v of get(slot.name)) squares += v * v;
      return squares > 0 ? 1 / Math.sqrt(squares) : 1;
    });
    return ({ slot, tensors, base, weights }) => {
      const fisherWeights = fishers.map((get, j) => {
        const f = get(slot.name);
        const perElement = new Float64Array(f.length);
        for (let e = 0; e < f.length; e++) perElement[e] = Math.max(f[e] * scales[j]!, floor) + epsilon;
        return { perElement };
      });
      return addToBase(weightedAverage(taskVectors(tensors, base), fisherWeights, weights, slot.shape), base);
    };
  },
};
