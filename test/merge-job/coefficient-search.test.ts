import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TokenBatch } from '@fisher-merge/core';
import { holdOut, readRunConfig, runJob, searchCoefficients, type Coefficient } from '@fisher-merge/merge-job';
import { tempDir } from '../support.ts';

const values = [0.5, 1, 1.5];
const coefficients: Coefficient[] = [{ name: 'a', values, start: 1 }, { name: 'b', values, start: 1 }];
/** Separable, with its maximum on the grid at a = 1.5, b = 0.5. */
const bowl = async (p: Record<string, number>) => -((p.a! - 1.5) ** 2) - (p.b! - 0.5) ** 2;

describe('coefficient search', () => {
  it('coordinate ascent starts at the defaults and climbs to the best grid point within the budget', async () => {
    const tried: Record<string, number>[] = [];
    const r = await searchCoefficients(coefficients, { strategy: 'coordinate', budget: 12 }, async (p) => (tried.push(p), bowl(p)));
    expect(tried[0]).toEqual({ a: 1, b: 1 });
    expect(r.best).toEqual({ a: 1.5, b: 0.5 });
    expect(r.startScore).toBe(await bowl({ a: 1, b: 1 }));
    expect(r.bestScore).toBeCloseTo(0, 12);
    expect(r.evaluations).toBe(tried.length);
    expect(new Set(tried.map((p) => `${p.a},${p.b}`)).size).toBe(tried.length);
  });

  it('never spends more than the budget; with a budget of 1 the defaults stand', async () => {
    for (const budget of [1, 2, 3]) {
      let calls = 0;
      const r = await searchCoefficients(coefficients, { strategy: 'coordinate', budget }, async (p) => (calls++, bowl(p)));
      expect(calls).toBe(budget);
      if (budget === 1) expect(r.best).toEqual({ a: 1, b: 1 });
    }
  });

  it('grid tries every combination once, and refuses a grid larger than the budget', async () => {
    let calls = 0;
    const r = await searchCoefficients(coefficients, { strategy: 'grid', budget: 9 }, async (p) => (calls++, bowl(p)));
    expect([calls, r.evaluations]).toEqual([9, 9]);
    expect(r.best).toEqual({ a: 1.5, b: 0.5 });
    await expect(searchCoefficients(coefficients, { strategy: 'grid', budget: 8 }, bowl)).rejects.toThrow('search: the grid has 9 points (defaults included) but the budget is 8 evaluations');
  });

  it('a draw keeps the defaults', async () => {
    const r = await searchCoefficients(coefficients, { strategy: 'coordinate', budget: 12 }, async () => 0.25);
    expect(r.best).toEqual({ a: 1, b: 1 });
  });

  it('the held-out rows and the reported rows partition the validation split', () => {
    const batch = (rows: number[]): TokenBatch => ({
      batchSize: rows.length,
      seqLen: 2,
      inputIds: Int32Array.from(rows.flatMap((r) => [r, r])),
      attentionMask: new Int32Array(rows.length * 2).fill(1),
      tokenTypeIds: new Int32Array(rows.length * 2),
      labels: Float32Array.from(rows),
    });
    const batches = [batch([0, 1, 2, 3]), batch([4, 5, 6, 7]), batch([8, 9])];
    const search = { holdout: 0.3, seed: 4, strategy: 'coordinate' as const, budget: 4, weights: values, scale: values, t: values, methods: [] };
    const split = holdOut(batches, search, 't');
    const labels = (bs: readonly TokenBatch[]) => bs.flatMap((b) => Array.from(b.labels!));
    expect(labels(split.search!)).toHaveLength(3);
    expect([...labels(split.search!), ...labels(split.report)].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const b of [...split.search!, ...split.report]) expect(Array.from(b.inputIds)).toEqual(Array.from(b.labels!).flatMap((r) => [r, r]));
    expect(labels(holdOut(batches, search, 't').search!)).toEqual(labels(split.search!));
    expect(() => holdOut(batches, { ...search, holdout: 0.01 }, 'sst2')).toThrow('search.holdout 0.01 of the 10 validation examples of sst2 leaves no rows to search on');
  });

  it('run: a search that moves is reported beside the defaults with its coefficients; one that cannot keeps the default merge', async () => {
    const root = path.resolve(import.meta.dirname, '../..');
    const dir = tempDir('fisher-merge-search-');
    mkdirSync(dir, { recursive: true });
    const task = (t: string) => [`  - task: ${t}`, `    model: ${root}/data/models/${t}`, `    train: ${root}/data/glue/${t}/train-00000-of-00001.parquet`, `    validation: ${root}/data/glue/${t}/validation-00000-of-00001.parquet`];
    // Both branches, each by construction: the only values searched are 1, so task-arithmetic (scale 1,
    // weights 1) has nothing to move to and keeps its merge, while 'faint' (scale 0.05) is searched at scale 1.
    writeFileSync(path.join(dir, 'search.yaml'), [
      `out: ${dir}/out`,
      'engine: onnx',
      'tasks:', ...task('sst2'), ...task('rte'),
      `base_model: ${root}/data/models/base`,
      'methods: [task-arithmetic, { merge_method: task-arithmetic, parameters: { scale: 0.05 }, label: faint }]',
      'evaluation: { limit: 120 }',
      'search: { holdout: 0.5, budget: 4, weights: [1], scale: [1] }',
      'save_models: all',
    ].join('\n'));
    const results = await runJob(await readRunConfig(path.join(dir, 'search.yaml')));
    const merges = results.merges.sst2_rte!;
    expect(Object.keys(merges)).toEqual(['task-arithmetic', 'task-arithmetic+search', 'faint', 'faint+search']);

    const kept = results.search.sst2_rte!['task-arithmetic']!;
    expect(kept.coefficients).toEqual({ scale: 1, 'weight.sst2': 1, 'weight.rte': 1 });
    expect(kept.evaluations).toBe(1);
    expect(kept.heldOut.chosen).toBe(kept.heldOut.defaults);
    // The defaults won: their merge and scores stand for the search, and no second folder is written.
    expect(existsSync(path.join(dir, 'out/merges/sst2_rte/task-arithmetic+search'))).toBe(false);
    expect(merges['task-arithmetic+search']).toEqual(merges['task-arithmetic']);

    const moved = results.search.sst2_rte!.faint!;
    expect(moved.evaluations).toBeLessThanOrEqual(4);
    expect(moved.heldOut.chosen, 'a merge at scale 0.05 is nearly the base model: scale 1 must beat it on the held-out rows').toBeGreaterThan(moved.heldOut.defaults);
    expect(moved.coefficients).toEqual({ scale: 1, 'weight.sst2': 1, 'weight.rte': 1 });
    const provenance = JSON.parse(readFileSync(path.join(dir, 'out/merges/sst2_rte/faint+search/merge.json'), 'utf8'));
    expect(provenance.lambdas).toEqual([1, 1]);
    expect(provenance.params.scale).toBe(1);
    expect(merges['faint+search']).not.toEqual(merges.faint);
    const md = readFileSync(path.join(dir, 'out/results.md'), 'utf8');
    expect(md).toContain('| merge | task | metric | own model | task-arithmetic | task-arithmetic+search | faint | faint+search | best |');
    expect(md).toMatch(/\| sst2_rte \| faint \| scale=1, weight\.sst2=1, weight\.rte=1 \| -?[\d.]+ \| -?[\d.]+ \| [1-4] \|/);
  }, 300_000);

  it('run: slerp searches its interpolation position t, and not the per-model weights it does not use', async () => {
    const root = path.resolve(import.meta.dirname, '../..');
    const dir = tempDir('fisher-merge-search-');
    const task = (t: string) => [`  - task: ${t}`, `    model: ${root}/data/models/${t}`, `    train: ${root}/data/glue/${t}/train-00000-of-00001.parquet`, `    validation: ${root}/data/glue/${t}/validation-00000-of-00001.parquet`];
    writeFileSync(path.join(dir, 'search.yaml'), [
      `out: ${dir}/out`,
      'engine: onnx',
      'tasks:', ...task('sst2'), ...task('rte'),
      'methods: [slerp]',
      'evaluation: { limit: 60 }',
      'search: { holdout: 0.5, budget: 4, t: [0, 1], weights: [0.5, 2] }',
    ].join('\n'));
    const results = await runJob(await readRunConfig(path.join(dir, 'search.yaml')));
    const found = results.search.sst2_rte!.slerp!;
    expect(Object.keys(found.coefficients)).toEqual(['t']);
    // The default t = 0.5, then t = 0 and t = 1: weights are never tried.
    expect(found.evaluations).toBe(3);
    expect(results.params.sst2_rte!['slerp+search']!.t).toBe(found.coefficients.t);
    expect(results.lambdas.sst2_rte!['slerp+search']).toEqual([1, 1]);
    expect(found.heldOut.chosen).toBeGreaterThanOrEqual(found.heldOut.defaults);
  }, 300_000);
});
