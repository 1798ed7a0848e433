import { UserError } from '@fisher-merge/core';
import { choleskyInPlace, choleskySolveInPlace, dotAt, NotPositiveDefinite } from '../cholesky.ts';
import type { MergeRule, SlotInput } from '../rule.ts';
import { uniformWeights, weightedAverage } from '../weighted-average.ts';

/** The summed reduced Grams of one input, factored, and each model's reduced Gram G_j' (lambda included). */
interface Factored {
  input: string;
  factor: Float64Array;
  reduced: Float64Array[];
}

/** G_j' = lambda_j (alpha G_j + (1 - alpha) diag(G_j)), G_j = S_j / n_j. */
function reducedGram(sum: Float64Array, count: number, alpha: number, lambda: number): Float64Array {
  const dim = Math.round(Math.sqrt(sum.length));
  const scale = lambda / count;
  return sum.map((v, k) => (k % (dim + 1) === 0 ? v : alpha * v) * scale);
}

/** sum_j G_j' W_j^T: [in, out] in float64, W_j being [out, in]. */
function gramTimesWeights(reduced: readonly Float64Array[], tensors: readonly Float32Array[], dim: number, out: number): Float64Array {
  const rhs = new Float64Array(dim * out);
  reduced.forEach((g, j) => {
    const w = tensors[j]!;
    for (let i = 0; i < dim; i++) {
      for (let o = 0; o < out; o++) rhs[i * out + o]! += dotAt(g, i * dim, w, o * dim, dim);
    }
  });
  return rhs;
}

export const regmean: MergeRule = {
  name: 'regmean',
  summary: "RegMean (Jin et al.): each merged linear's W* = ((sum_j G_j')^-1 sum_j G_j' W_j^T)^T from its input Grams, solved in float64; every other encoder tensor the plain mean.",
  params: [
    { name: 'alpha', type: 'number', default: 1, valid: { test: (v) => v >= 0 && v <= 1, expected: 'a number in [0, 1]' }, help: "share of each Gram's off-diagonal kept: G' = alpha G + (1 - alpha) diag(G)" },
    { name: 'ridge', type: 'number', default: 0, valid: { test: (v) => v >= 0 && Number.isFinite(v), expected: 'a finite number >= 0' }, help: "added to the summed Gram's diagonal, times its mean diagonal entry (0: a singular sum is refused)" },
  ],
  needs: { stats: ['gram'], base: false },
  prepare({ stats, params }) {
    const grams = stats.gram!;
    const alpha = Number(params.alpha);
    const ridge = Number(params.ridge);
    // Query, key and value read one input and come one after another: their factor is kept for the next.
    let last: Factored | undefined;
    const factored = (input: string, own: readonly { sum: Float64Array; count: number }[], lambdas: readonly number[], tensor: string): Factored => {
      if (last?.input === input) return last;
      const reduced = own.map((g, j) => reducedGram(g.sum, g.count, alpha, lambdas[j]!));
      const dim = Math.round(Math.sqrt(reduced[0]!.length));
      const factor = new Float64Array(dim * dim);
      for (const g of reduced) for (let k = 0; k < factor.length; k++) factor[k]! += g[k]!;
      if (ridge > 0) {
        let trace = 0;
        for (let i = 0; i < dim; i++) trace += factor[i * (dim + 1)]!;
        for (let i = 0; i < dim; i++) factor[i * (dim + 1)]! += (ridge * trace) / dim;
      }
      try {
        choleskyInPlace(factor, dim);
      } catch (e) {
        if (!(e instanceof NotPositiveDefinite)) throw e;
        throw new UserError(`regmean: the summed Gram of '${tensor}' (input of ${input}, ${dim} x ${dim}) is singular to float64 precision: ${e.message}; use more examples, alpha < 1 or ridge > 0 (e.g. --param ridge=1e-6)`);
      }
      return (last = { input, factor, reduced });
    };
    return ({ slot, tensors, weights }: SlotInput) => {
      const own = grams.map((g) => g(slot));
      if (own.some((g) => g === undefined)) return weightedAverage(tensors, uniformWeights(tensors.length), tensors.map(() => 1), slot.shape);
      const [out, dim] = slot.shape as [number, number];
      const { factor, reduced } = factored(own[0]!.input, own as { sum: Float64Array; count: number }[], weights, slot.name);
      const solution = gramTimesWeights(reduced, tensors, dim, out);
      choleskySolveInPlace(factor, dim, solution, out);
      const merged = new Float32Array(out * dim);
      for (let i = 0; i < dim; i++) for (let o = 0; o < out; o++) merged[o * dim + i] = solution[i * out + o]!;
      return merged;
    };
  },
};
