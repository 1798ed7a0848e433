import { SeededRandom } from '@fisher-merge/core';
import type { SlotInput } from './rule.ts';
import { rowSizeOf, weightAt, type TensorWeight } from './weighted-average.ts';

/** theta_j - base per model (float32, as stored); without a base, the models' own tensors. */
export function taskVectors(tensors: readonly Float32Array[], base?: Float32Array): Float32Array[] {
  return base ? tensors.map((theta) => theta.map((v, e) => v - base[e])) : [...tensors];
}

/** base + scale * delta; without a base, delta itself. */
export function addToBase(delta: Float32Array, base?: Float32Array, scale = 1): Float32Array {
  return base ? delta.map((v, e) => base[e] + scale * v) : delta;
}

/**
 * Magnitude sparsification (TIES's trim): keeps the floor(density * n) entries of largest |t| and
 * zeroes the others; equal magnitudes at the threshold are kept lowest index first.
 */
export function keepTopMagnitude(t: Float32Array, density: number): Float32Array {
  if (density >= 1) return t;
  const n = t.length;
  const k = Math.floor(density * n);
  const out = new Float32Array(n);
  if (k === 0) return out;
  const magnitudes = Float32Array.from(t, Math.abs).sort();
  const threshold = magnitudes[n - k];
  let atThreshold = 0;
  for (let i = n - k; i < n && magnitudes[i] === threshold; i++) atThreshold++;
  for (let e = 0; e < n; e++) {
    const m = Math.abs(t[e]);
    if (m > threshold || (m === threshold && atThreshold-- > 0)) out[e] = t[e];
  }
  return out;
}

/** DARE's drop and rescale: each entry is kept when its draw is < density, and divided by density. */
export function dropAndRescale(t: Float32Array, density: number, random: SeededRandom): Float32Array {
  if (density >= 1) return t;
  return t.map((v) => (random.next() < density ? v / density : 0));
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

/** Each model's task vector trimmed to its `density` by magnitude (TIES). */
export function trimmedTaskVectors({ tensors, base, modelParams }: SlotInput): Float32Array[] {
  return taskVectors(tensors, base).map((t, j) => keepTopMagnitude(t, Number(modelParams[j]!.density)));
}

/** Each model's task vector with DARE's seeded drop at its `density`. */
export function droppedTaskVectors({ slot, tensors, base, modelParams }: SlotInput, seed: number): Float32Array[] {
  return taskVectors(tensors, base).map((t, j) => dropAndRescale(t, Number(modelParams[j]!.density), new SeededRandom(dropSeed(seed, j, slot.name))));
}
