import { readdirSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { mergeModels, type MergeJobOptions } from '@fisher-merge/merge-writer';
import { tempDir } from '../support.ts';
import { baseDir, encoder, encoderShapes, mergedEncoder, modelDir, type Weights } from './fixture-encoders.ts';

/**
 * breadcrumbs, breadcrumbs-ties, della, della-linear, model-stock, slerp and magmax through
 * mergeModels on the fixture models (sst2, cola; base data/models/base), each checked against a
 * float64 evaluation of its formula written here (libs/merge/README.md).
 */
const TASKS = ['sst2', 'cola'];
const dir = tempDir('fisher-merge-rules-on-fixtures-');

let baseWeights: Weights;
let shapes: Map<string, number[]>;
let models: Weights[];

beforeAll(() => {
  baseWeights = encoder(path.join(baseDir, 'model.safetensors'));
  shapes = encoderShapes();
  models = TASKS.map((t) => encoder(path.join(modelDir(t), 'model.safetensors')));
});

const merge = (method: string, opts: Partial<MergeJobOptions> = {}) => mergedEncoder(path.join(dir, method), { models: TASKS.map(modelDir), base: baseDir, method, ...opts });
/** theta_j - base in float32, as the checkpoints store both. */
const taskVector = (j: number, name: string) => Float32Array.from(models[j]!.get(name)!, (v, e) => v - baseWeights.get(name)![e]!);
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let e = 0; e < a.length; e++) s += a[e]! * b[e]!;
  return s;
};

/** Every merged tensor against its expected values, within a few float32 roundings of `magnitude`. */
function expectMerged(merged: Weights, want: (name: string) => { value: (e: number) => number; magnitude: (e: number) => number }): void {
  for (const name of baseWeights.keys()) {
    const got = merged.get(name)!;
    const { value, magnitude } = want(name);
    for (let e = 0; e < got.length; e++) if (!(Math.abs(got[e]! - value(e)) <= 1e-6 * magnitude(e) + 1e-30)) expect.fail(`${name}[${e}]: got ${got[e]}, want ${value(e)}`);
  }
}

/** The magnitude of base + task vectors at an element, for tolerances. */
const sizeAt = (name: string, tvs: ArrayLike<number>[]) => (e: number) => Math.abs(baseWeights.get(name)![e]!) + tvs.reduce((s, t) => s + Math.abs(t[e]!), 0);

/**
 * Indices of t[from, from + length) ordered by |t|, from the largest (equal magnitudes lowest index
 * first) or from the smallest (equal magnitudes lowest index first).
 */
function orderByMagnitude(t: ArrayLike<number>, direction: 'fromLargest' | 'fromSmallest', from = 0, length = t.length): Uint32Array {
  const m = Float64Array.from({ length }, (_, i) => Math.abs(t[from + i]!));
  const sign = direction === 'fromLargest' ? -1 : 1;
  return Uint32Array.from({ length }, (_, i) => i)
    .sort((a, b) => sign * (m[a]! - m[b]!) || a - b)
    .map((i) => from + i);
}

describe('the new rules on the fixture models', () => {
  it('breadcrumbs and breadcrumbs-ties: the ranks [floor(gamma n), + floor(density n)) by |t| of each task vector', async () => {
    const lambdas = [0.7, 1.3];
    const [density, gamma] = [0.4, 0.05];
    const masks = new Map<string, Float64Array[]>();
    const masked = (name: string) => masks.get(name) ?? masks.set(name, maskOf(name)).get(name)!;
    const maskOf = (name: string) =>
      [0, 1].map((j) => {
        const t = taskVector(j, name);
        const n = t.length, kept = Math.floor(density * n), top = Math.min(Math.floor(gamma * n), n - kept);
        const out = new Float64Array(n);
        for (const e of orderByMagnitude(t, 'fromLargest').subarray(top, top + kept)) out[e] = t[e]!;
        return out;
      });
    const params = { density, gamma, scale: 0.9 };
    const linear = await merge('breadcrumbs', { lambdas, params });
    expectMerged(linear, (name) => {
      const m = masked(name);
      return { value: (e) => baseWeights.get(name)![e]! + 0.9 * (lambdas[0]! * m[0]![e]! + lambdas[1]! * m[1]![e]!), magnitude: sizeAt(name, m) };
    });
    expect(linear.provenance.params).toEqual(params);
    const ties = await merge('breadcrumbs-ties', { params: { density, gamma } });
    expectMerged(ties, (name) => {
      const m = masked(name);
      return {
        value: (e) => {
          const [a, b] = [m[0]![e]!, m[1]![e]!];
          // Equal weights: the mean of the entries agreeing with the sign of their sum.
          const s = Math.sign(a + b);
          const agreeing = [a, b].filter((v) => Math.sign(v) === s);
          return baseWeights.get(name)![e]! + (agreeing.length ? agreeing.reduce((x, y) => x + y, 0) / agreeing.length : 0);
        },
        magnitude: sizeAt(name, m),
      };
    });
  });

  /**
   * DELLA's drops are random: every element must be a combination of kept (t_j / p_j, float32) and
   * dropped entries, and the kept share of the entries decided must follow the rank probabilities
   * p = density - epsilon + 2 epsilon r / (R - 1): within 6 standard deviations in the bottom and top
   * fifths of each row's ranks separately.
   */
  async function checkDella(method: string, combine: (d: number[]) => number): Promise<void> {
    const [density, epsilon] = [0.5, 0.2];
    const merged = await merge(method, { params: { density, epsilon, seed: 2 } });
    const tally = { bottom: { entries: 0, kept: 0, expected: 0, variance: 0 }, top: { entries: 0, kept: 0, expected: 0, variance: 0 } };
    for (const [name, b] of baseWeights) {
      const shape = shapes.get(name)!;
      const rowSize = shape.length > 1 ? b.length / shape[0]! : b.length;
      const t = [0, 1].map((j) => taskVector(j, name));
      const p = t.map((tv) => {
        const probability = new Float64Array(tv.length);
        for (let row = 0; row < tv.length; row += rowSize) {
          orderByMagnitude(tv, 'fromSmallest', row, rowSize).forEach((e, r) => {
            probability[e] = density - epsilon + (2 * epsilon * r) / (rowSize - 1);
          });
        }
        return probability;
      });
      const got = merged.get(name)!;
      for (let e = 0; e < b.length; e++) {
        const magnitude = Math.abs(b[e]!) + (Math.abs(t[0]![e]!) + Math.abs(t[1]![e]!)) / (density - epsilon);
        const fits = [[0, 0], [1, 0], [0, 1], [1, 1]].filter((keep) => Math.abs(got[e]! - (b[e]! + combine(keep.map((k, j) => (k ? Math.fround(t[j]![e]! / p[j]![e]!) : 0))))) <= 1e-6 * magnitude + 1e-30);
        if (fits.length === 0) expect.fail(`${name}[${e}]: ${got[e]} is no combination of kept and dropped entries`);
        for (let j = 0; j < 2; j++) {
          if (!fits.every((keep) => keep[j] === fits[0]![j])) continue;
          const share = (p[j]![e]! - (density - epsilon)) / (2 * epsilon);
          const bucket = share <= 0.2 ? tally.bottom : share >= 0.8 ? tally.top : undefined;
          if (!bucket) continue;
          bucket.entries++;
          bucket.kept += fits[0]![j]!;
          bucket.expected += p[j]![e]!;
          bucket.variance += p[j]![e]! * (1 - p[j]![e]!);
        }
      }
    }
    for (const bucket of [tally.bottom, tally.top]) {
      expect(bucket.variance).toBeGreaterThan(10_000);
      expect(Math.abs(bucket.kept - bucket.expected)).toBeLessThan(6 * Math.sqrt(bucket.variance));
    }
    // The ranks matter: the top fifth is kept far more often than the bottom one (about 0.66 vs 0.34).
    expect(tally.top.kept / tally.top.entries - tally.bottom.kept / tally.bottom.entries).toBeGreaterThan(0.25);
  }

  it('della-linear: magnitude-ranked keep probabilities within each row, kept entries divided by them, summed', () => checkDella('della-linear', (d) => d[0]! + d[1]!));

  it('della: the same drop, then the sign-consensus mean', () =>
    checkDella('della', ([a, b]) => {
      const s = Math.sign(a! + b!);
      const agreeing = [a!, b!].filter((v) => Math.sign(v) === s);
      return agreeing.length ? agreeing.reduce((x, y) => x + y, 0) / agreeing.length : 0;
    }));

  it('model-stock: base + t * mean task vector, t = 2c / (1 + c) from the cosine of the two task vectors per tensor', async () => {
    const merged = await merge('model-stock');
    expectMerged(merged, (name) => {
      const [a, b] = [0, 1].map((j) => taskVector(j, name));
      const c = Math.max(-1, Math.min(1, dot(a!, b!) / Math.max(Math.sqrt(dot(a!, a!) * dot(b!, b!)), 1e-6)));
      const t = (2 * c) / (1 + c);
      return { value: (e) => baseWeights.get(name)![e]! + (t * (a![e]! + b![e]!)) / 2, magnitude: sizeAt(name, [a!, b!]) };
    });
  });

  it('slerp: the two fine-tuned models interpolated on the great circle at t, without a base', async () => {
    const merged = await merge('slerp', { base: undefined, params: { t: 0.3 } });
    expect(merged.provenance.params).toEqual({ t: 0.3 });
    expectMerged(merged, (name) => {
      const [a, b] = [0, 1].map((j) => models[j]!.get(name)!);
      const cosine = dot(a!, b!) / Math.sqrt(dot(a!, a!) * dot(b!, b!));
      const theta = Math.acos(cosine);
      const [s0, s1] = Math.abs(cosine) > 0.9995 ? [0.7, 0.3] : [Math.sin(0.7 * theta) / Math.sin(theta), Math.sin(0.3 * theta) / Math.sin(theta)];
      return { value: (e) => s0 * a![e]! + s1 * b![e]!, magnitude: (e) => Math.abs(a![e]!) + Math.abs(b![e]!) };
    });
  });

  it('magmax: base + scale * the task-vector entry of largest magnitude', async () => {
    const merged = await merge('magmax', { params: { scale: 0.6 } });
    expectMerged(merged, (name) => {
      const [a, b] = [0, 1].map((j) => taskVector(j, name));
      return { value: (e) => baseWeights.get(name)![e]! + 0.6 * (Math.abs(b![e]!) >= Math.abs(a![e]!) ? b![e]! : a![e]!), magnitude: sizeAt(name, [a!, b!]) };
    });
  });

  it('refuses slerp of three models and DELLA probabilities outside (0, 1) before writing anything', async () => {
    const out = path.join(dir, 'refused');
    await expect(mergeModels({ models: ['sst2', 'cola', 'rte'].map(modelDir), method: 'slerp', out })).rejects.toThrow("merge method 'slerp' merges exactly 2 models, got 3");
    await expect(mergeModels({ models: TASKS.map(modelDir), base: baseDir, method: 'della', params: { density: 0.1, epsilon: 0.15 }, out })).rejects.toThrow(/model 1 of 'della': density - epsilon and density \+ epsilon must lie in \(0, 1\)/);
    // Neither the folder nor a temporary one beside it.
    expect(readdirSync(dir).filter((f) => f.includes('refused'))).toEqual([]);
  });
});
