import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { readMaskFisher, writeMaskFisher, type MaskFisher } from '@fisher-merge/fisher';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import type { MergeJobOptions } from '@fisher-merge/merge-writer';
import { tempDir } from '../support.ts';
import { baseDir as base, encoder, encoderShapes, mergedEncoder, modelDir, root, type Provenance, type Weights } from './fixture-encoders.ts';

/**
 * TIES, DARE and mask-fisher-ties on the fixture models (sst2, cola) with data/models/base, checked
 * against float64 implementations written here from the rules' definitions (issue 10). Task vectors
 * are float32 tensors, as in the checkpoints (and mergekit); everything after is float64.
 */
const TASKS = ['sst2', 'cola'];
const dir = tempDir('fisher-merge-task-vector-rules-');
const fisherFile = (t: string) => path.join(dir, `${t}.mask.safetensors`);

let baseWeights: Weights;
let shapes: Map<string, number[]>;
let models: Weights[];
let fishers: MaskFisher[];

beforeAll(async () => {
  baseWeights = encoder(path.join(base, 'model.safetensors'));
  shapes = encoderShapes();
  models = TASKS.map((t) => encoder(path.join(modelDir(t), 'model.safetensors')));
  for (const t of TASKS) {
    const { stats } = await computeMaskFisher({ modelDir: modelDir(t), data: path.join(root, 'data/glue', t, 'train-00000-of-00001.parquet'), task: glueTask(t), samples: 32, batchSize: 16, mode: 'batch', engine: 'onnx' });
    await writeMaskFisher(fisherFile(t), stats);
  }
  fishers = await Promise.all(TASKS.map((t) => readMaskFisher(fisherFile(t))));
}, 120_000);

/** The merged encoder weights, and the merge's merge.json. */
const merge = (name: string, opts: Partial<MergeJobOptions>): Promise<Weights & { provenance: Provenance }> =>
  mergedEncoder(path.join(dir, name), { models: TASKS.map(modelDir), base, method: 'ties', ...opts });

const taskVector = (j: number, name: string): Float32Array => Float32Array.from(models[j]!.get(name)!, (v, e) => v - baseWeights.get(name)![e]!);

/** The k = floor(density n) entries of largest |t|; among entries equal to the k-th largest, lower indices first. */
function trim(t: Float32Array, density: number): Float64Array {
  if (density >= 1) return Float64Array.from(t);
  const k = Math.floor(density * t.length);
  const kth = Float64Array.from(t, Math.abs).sort().reverse()[k - 1]!;
  let equalKept = k - t.filter((v) => Math.abs(v) > kth).length;
  return Float64Array.from(t, (v) => (Math.abs(v) > kth || (Math.abs(v) === kth && equalKept-- > 0) ? v : 0));
}

/** TIES's combination of one element: elected sign of sum_j W_j t_j, mean of the agreeing t_j by W_j. */
function tiesElement(t: readonly number[], W: readonly number[]): number {
  const s = Math.sign(t.reduce((acc, v, j) => acc + W[j]! * v, 0));
  let num = 0, den = 0;
  t.forEach((v, j) => {
    if (Math.sign(v) === s) {
      num += W[j]! * v;
      den += W[j]!;
    }
  });
  return den === 0 ? num : num / den;
}

/** |got - want| within a few float32 roundings of the magnitudes involved. */
function expectNear(got: number, want: number, magnitude: number, label: string): void {
  if (!(Math.abs(got - want) <= 1e-6 * magnitude + 1e-30)) expect.fail(`${label}: got ${got}, want ${want}`);
}

/** The paper's per-row weight of each element of a tensor (method.md section 3), written from the definitions. */
function maskFisherRowWeights(f: MaskFisher, other: MaskFisher, name: string, rows: number): Float64Array {
  const L = f.numLayers, H = f.numHeads, I = f.intermediateSize;
  const fixed = (own: Float64Array, theirs: Float64Array) => Float64Array.from(own, (v, k) => (v === 0 && theirs[k] === 0 ? 1 : v));
  const head = fixed(f.head, other.head), neuron = fixed(f.neuron, other.neuron);
  const headMean = (l: number) => head.slice(l * H, (l + 1) * H).reduce((a, b) => a + b, 0) / H;
  const neuronMean = (l: number) => neuron.slice(l * I, (l + 1) * I).reduce((a, b) => a + b, 0) / I;
  let universal = 0;
  for (let l = 0; l < L; l++) universal += (headMean(l) + neuronMean(l)) / L;
  const layer = Number(/layer\.(\d+)\./.exec(name)?.[1]);
  return Float64Array.from({ length: rows }, (_, r) => {
    if (/attention\.self\.(query|key)\./.test(name)) return head[layer * H + Math.floor(r / (rows / H))]!;
    if (name.includes('attention')) return headMean(layer);
    if (name.includes('intermediate.dense')) return neuron[layer * I + r]!;
    if (/layer\.\d+\.output\./.test(name)) return neuronMean(layer);
    return universal;
  });
}

describe('task-vector rules against float64 implementations of their definitions', () => {
  it('ties: trim to density by magnitude, elect the sign of the weighted sum, average the agreeing entries', async () => {
    const densities = [0.3, 0.6];
    const lambdas = [1, 2];
    const merged = await merge('ties', { method: 'ties', lambdas, modelParams: densities.map((density) => ({ density })) });
    for (const [name, b] of baseWeights) {
      const trimmed = TASKS.map((_, j) => trim(taskVector(j, name), densities[j]!));
      const got = merged.get(name)!;
      for (let e = 0; e < b.length; e++) {
        const t = trimmed.map((v) => v[e]!);
        expectNear(got[e]!, b[e]! + tiesElement(t, lambdas), Math.abs(b[e]!) + Math.abs(t[0]!) + Math.abs(t[1]!), `${name}[${e}]`);
      }
    }
    const { provenance } = merged;
    expect(provenance.params).toEqual({ density: 1, scale: 1 });
    expect(provenance.models.map((m) => m.params)).toEqual([{ density: 0.3 }, { density: 0.6 }]);
  });

  it('mask-fisher-ties: the mask-node Fisher row weights take the place of w_j in TIES', async () => {
    const merged = await merge('mask-fisher-ties', { method: 'mask-fisher-ties', fishers: TASKS.map(fisherFile), params: { density: 0.5 } });
    for (const [name, b] of baseWeights) {
      const rows = shapes.get(name)![0]!;
      const W = TASKS.map((_, j) => maskFisherRowWeights(fishers[j]!, fishers[1 - j]!, name, rows));
      const trimmed = TASKS.map((_, j) => trim(taskVector(j, name), 0.5));
      const got = merged.get(name)!;
      for (let e = 0; e < b.length; e++) {
        const t = trimmed.map((v) => v[e]!);
        const row = Math.floor(e / (b.length / rows));
        expectNear(got[e]!, b[e]! + tiesElement(t, W.map((w) => w[row]!)), Math.abs(b[e]!) + Math.abs(t[0]!) + Math.abs(t[1]!), `${name}[${e}]`);
      }
    }
  });

  /**
   * DARE's drops are random, so the check finds for every element which models' entries were kept
   * (each kept entry is t_j / density, in float32) and that the kept share matches the density.
   */
  function checkDare(merged: Weights, density: number, combine: (d: number[]) => number): void {
    const kept = [0, 0], decided = [0, 0];
    for (const [name, b] of baseWeights) {
      const t = TASKS.map((_, j) => taskVector(j, name));
      const got = merged.get(name)!;
      for (let e = 0; e < b.length; e++) {
        const magnitude = Math.abs(b[e]!) + (Math.abs(t[0]![e]!) + Math.abs(t[1]![e]!)) / density;
        const fits = [[0, 0], [1, 0], [0, 1], [1, 1]].filter((keep) => {
          const d = keep.map((k, j) => (k ? Math.fround(t[j]![e]! / density) : 0));
          return Math.abs(got[e]! - (b[e]! + combine(d))) <= 1e-6 * magnitude + 1e-30;
        });
        if (fits.length === 0) expect.fail(`${name}[${e}]: ${got[e]} is no combination of kept and dropped entries`);
        // A model's entry counts where every fitting combination agrees on whether it was kept.
        for (let j = 0; j < 2; j++) {
          if (fits.every((keep) => keep[j] === fits[0]![j])) {
            kept[j]! += fits[0]![j]!;
            decided[j]!++;
          }
        }
      }
    }
    // Binomial: the kept share is within 6 standard deviations of the density.
    for (let j = 0; j < 2; j++) {
      expect(decided[j]).toBeGreaterThan(1_000_000);
      expect(Math.abs(kept[j]! / decided[j]! - density)).toBeLessThan(6 * Math.sqrt((density * (1 - density)) / decided[j]!));
    }
  }

  it('dare-linear: each entry kept with probability density and rescaled, then the weighted sum added to the base', async () => {
    const lambdas = [0.7, 1.3];
    const merged = await merge('dare-linear', { method: 'dare-linear', lambdas, params: { density: 0.4, seed: 3 } });
    checkDare(merged, 0.4, (d) => lambdas[0]! * d[0]! + lambdas[1]! * d[1]!);
  });

  it('dare-ties: the random drop, then TIES sign consensus and mean', async () => {
    const merged = await merge('dare-ties', { method: 'dare-ties', params: { density: 0.5, seed: 3 } });
    checkDare(merged, 0.5, (d) => tiesElement(d, [1, 1]));
  });

  it('dare-* are equal for equal seeds and differ for different ones', async () => {
    for (const method of ['dare-linear', 'dare-ties']) {
      const [a, b, c] = await Promise.all([1, 1, 2].map((seed, i) => merge(`${method}-seed-${i}`, { method, params: { density: 0.5, seed } })));
      const name = 'encoder.layer.1.intermediate.dense.weight';
      for (const [n, v] of a) expect(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(b.get(n)!.buffer, b.get(n)!.byteOffset, v.byteLength)), `${method} same seed ${n}`).toBe(true);
      const differing = a.get(name)!.filter((v, e) => v !== c.get(name)![e]).length;
      expect(differing, `${method} other seed`).toBeGreaterThan(a.get(name)!.length / 10);
    }
  });
});
