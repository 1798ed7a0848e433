import { SeededRandom, UserError } from '@fisher-merge/core';
import type { Params, SlotInput } from './rule.ts';
import { rowSizeOf, uniformWeights, weightAt, weightedSum, type TensorWeight } from './weighted-average.ts';

/** theta_j - base per model (float32, as stored); without a base, the models' own tensors. */
export function taskVectors(tensors: readonly Float32Array[], base?: Float32Array): Float32Array[] {
  return base ? tensors.map((theta) => theta.map((v, e) => v - base[e])) : [...tensors];
}

/** base + scale * delta; without a base, delta itself. */
export function addToBase(delta: Float32Array, base?: Float32Array, scale = 1): Float32Array {
  return base ? delta.map((v, e) => base[e] + scale * v) : delta;
}

/**
 * Keeps the entries of magnitude ranks [from, to) and zeroes the others; ranks order |t| from the
 * largest down, equal magnitudes lowest index first.
 */
export function keepMagnitudeRanks(t: Float32Array, from: number, to: number): Float32Array {
  const n = t.length;
  if (from <= 0 && to >= n) return t;
  const out = new Float32Array(n);
  if (to <= from) return out;
  const descending = Float32Array.from(t, Math.abs).sort().reverse();
  const upper = descending[from], lower = descending[to - 1];
  // The entries equal to a boundary magnitude take its ranks in index order: the next rank of each.
  const nextRank = new Map([upper, lower].map((m) => [m, descending.indexOf(m)]));
  for (let e = 0; e < n; e++) {
    const m = Math.abs(t[e]);
    if (m > upper || m < lower) continue;
    if (m < upper && m > lower) out[e] = t[e];
    else {
      const rank = nextRank.get(m)!;
      nextRank.set(m, rank + 1);
      if (rank >= from && rank < to) out[e] = t[e];
    }
  }
  return out;
}

/** Magnitude sparsification (TIES's trim): keeps the floor(density * n) entries of largest |t|. */
export function keepTopMagnitude(t: Float32Array, density: number): Float32Array {
  return density >= 1 ? t : keepMagnitudeRanks(t, 0, Math.floor(density * t.length));
}

/**
 * Model Breadcrumbs' mask (mergekit's magnitude_outliers): drops the floor(gamma * n) entries of
 * largest |t|, fewer where the kept count needs them, then the smallest, keeping floor(density * n).
 */
export function keepBreadcrumbs(t: Float32Array, density: number, gamma: number): Float32Array {
  if (density >= 1) return t;
  const n = t.length;
  const kept = Math.floor(density * n);
  const top = Math.min(Math.floor(gamma * n), n - kept);
  return keepMagnitudeRanks(t, top, top + kept);
}

/** DARE's drop and rescale: each entry is kept when its draw is < density, and divided by density. */
export function dropAndRescale(t: Float32Array, density: number, random: SeededRandom): Float32Array {
  if (density >= 1) return t;
  return t.map((v) => (random.next() < density ? v / density : 0));
}

/**
 * DELLA's MagPrune: within each row (the first axis; a vector is one row) the entry of magnitude
 * rank r (0 = smallest |t|, equal magnitudes lowest index first) of R is kept with probability
 * p_r = density - epsilon + 2 epsilon r / (R - 1) (density where R = 1) and divided by p_r; one draw
 * per entry in index order, as DARE's, so epsilon 0 is DARE's drop.
 */
export function magnitudeRankDrop(t: Float32Array, shape: readonly number[], density: number, epsilon: number, random: SeededRandom): Float32Array {
  if (density >= 1) return t;
  const n = t.length;
  const rowSize = shape.length > 1 ? rowSizeOf(n, shape) : n;
  // |t| as float32 bits orders like |t|; bits * rowSize + index sorts a row by (|t|, index) exactly in a double.
  const bits = new Uint32Array(Float32Array.from(t, Math.abs).buffer);
  const keys = new Float64Array(rowSize);
  const probability = new Float64Array(n);
  for (let row = 0; row < n; row += rowSize) {
    for (let i = 0; i < rowSize; i++) keys[i] = bits[row + i] * rowSize + i;
    keys.sort();
    for (let r = 0; r < rowSize; r++) probability[row + (keys[r] % rowSize)] = rowSize > 1 ? density - epsilon + (2 * epsilon * r) / (rowSize - 1) : density;
  }
  return t.map((v, e) => (random.next() < probability[e] ? v / probability[e] : 0));
}

/** DELLA's keep probabilities must lie in (0, 1): density - epsilon > 0 and density + epsilon < 1 where density < 1. */
export function checkDellaProbabilities(rule: string, modelParams: readonly Params[]): void {
  modelParams.forEach(({ density, epsilon }, j) => {
    const d = Number(density), e = Number(epsilon);
    if (d < 1 && (d - e <= 0 || d + e >= 1)) {
      throw new UserError(`parameters of model ${j + 1} of '${rule}': density - epsilon and density + epsilon must lie in (0, 1), got density ${d} and epsilon ${e}`);
    }
  });
}

/** Per entry the value of largest |t_j| over the task vectors, the later one on ties (MagMax). */
export function maxMagnitude(tvs: readonly Float32Array[]): Float32Array {
  return tvs.reduce((best, t) => best.map((v, e) => (Math.abs(t[e]) >= Math.abs(v) ? t[e] : v)));
}

/** sum_e a_e b_e in float64. */
export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let e = 0; e < a.length; e++) s += a[e] * b[e];
  return s;
}

/** FNV-1a of `seed/model/tensor`: each model's tensor draws its own reproducible random stream. */
export function dropSeed(seed: number, model: number, tensor: string): number {
  let h = 0x811c9dc5;
  for (const c of `${seed}/${model}/${tensor}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193);
  return h >>> 0;
}

/**
 * TIES's sign consensus and disjoint mean, element-wise in float64: with W_j = lambda_j w_j, the
 * elected sign is s = sign(sum_j W_j t_j) and the result sum_j W_j t_j [sign t_j = s] / sum_j W_j
 * [sign t_j = s] (divisor 1 where it is 0).
 */
export function signConsensusMean(tvs: readonly Float32Array[], weights: readonly TensorWeight[], lambdas: readonly number[], shape: readonly number[]): Float32Array {
  const n = tvs[0].length;
  const rowSize = rowSizeOf(n, shape);
  const out = new Float32Array(n);
  const W = new Float64Array(tvs.length);
  for (let e = 0; e < n; e++) {
    let total = 0;
    for (let j = 0; j < tvs.length; j++) {
      W[j] = lambdas[j] * weightAt(weights[j], e, rowSize);
      total += W[j] * tvs[j][e];
    }
    const s = Math.sign(total);
    let num = 0;
    let den = 0;
    for (let j = 0; j < tvs.length; j++) {
      if (Math.sign(tvs[j][e]) !== s) continue;
      num += W[j] * tvs[j][e];
      den += W[j];
    }
    out[e] = den !== 0 ? num / den : num;
  }
  return out;
}

/** Each model's task vector through a sparsifier given its per-model parameters and index. */
export function sparseTaskVectors({ tensors, base, modelParams }: SlotInput, sparsify: (t: Float32Array, params: Params, model: number) => Float32Array): Float32Array[] {
  return taskVectors(tensors, base).map((t, j) => sparsify(t, modelParams[j]!, j));
}

/** Each model's task vector trimmed to its `density` by magnitude (TIES). */
export const trimmedTaskVectors = (input: SlotInput): Float32Array[] => sparseTaskVectors(input, (t, p) => keepTopMagnitude(t, Number(p.density)));

/** Each model's task vector with DARE's seeded drop at its `density`. */
export const droppedTaskVectors = (input: SlotInput, seed: number): Float32Array[] =>
  sparseTaskVectors(input, (t, p, j) => dropAndRescale(t, Number(p.density), new SeededRandom(dropSeed(seed, j, input.slot.name))));

/** Each model's task vector without its largest `gamma` share and its smallest, keeping `density` (Breadcrumbs). */
export const breadcrumbTaskVectors = (input: SlotInput): Float32Array[] => sparseTaskVectors(input, (t, p) => keepBreadcrumbs(t, Number(p.density), Number(p.gamma)));

/** Each model's task vector with DELLA's seeded magnitude-ranked drop at its `density` and `epsilon`. */
export const dellaTaskVectors = (input: SlotInput, seed: number): Float32Array[] =>
  sparseTaskVectors(input, (t, p, j) => magnitudeRankDrop(t, input.slot.shape, Number(p.density), Number(p.epsilon), new SeededRandom(dropSeed(seed, j, input.slot.name))));

/** base + scale * sum_j lambda_j t_j (task arithmetic's combination, and the *-linear rules'). */
export const summedToBase = (tvs: readonly Float32Array[], { base, weights }: SlotInput, scale: number): Float32Array => addToBase(weightedSum(tvs, weights), base, scale);

/** base + scale * TIES's sign-consensus mean of the task vectors, each counting by lambda alone. */
export const consensusToBase = (tvs: readonly Float32Array[], { slot, base, weights }: SlotInput, scale: number): Float32Array =>
  addToBase(signConsensusMean(tvs, uniformWeights(tvs.length), weights, slot.shape), base, scale);
