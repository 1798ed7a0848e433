import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { lastValueFrom, toArray } from 'rxjs';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { parquetSource } from '@fisher-merge/data';
import { readFullFisher, readMaskFisher } from '@fisher-merge/fisher';
import type { RunResults } from '@fisher-merge/merge-job';
import { runFixturePairs } from './fixture-run.ts';

/**
 * The PyTorch reference end to end: the run job over the fixture pairs must reproduce the merged
 * encoder weights (test/fixtures/golden/merged) and every metric of test/fixtures/results.json.
 */
const root = path.resolve(import.meta.dirname, '../..');
const golden = path.join(root, 'test/fixtures/golden');
const reference = JSON.parse(readFileSync(path.join(root, 'test/fixtures/results.json'), 'utf8')) as {
  tasks: string[];
  individual: Record<string, Record<string, number>>;
  pairs: Record<string, Record<string, { metrics: Record<string, Record<string, number>> }>>;
};
const METHOD = { fisher_nodes: 'mask-fisher', average: 'isotropic', fisher_full: 'full-fisher' } as const;

let out: string;
let results: RunResults;

beforeAll(async () => {
  // The reference's task order (sst2, cola, rte, stsb) is the pairs' first-seen order.
  ({ out, results } = await runFixturePairs('reference', Object.keys(reference.pairs), [
    'fisher: { samples: 128, batch_size: 32, mode: batch }',
    'full_fisher: { samples: 32, mode: empirical }',
    'methods: [isotropic, mask-fisher, full-fisher]',
  ]));
}, 900_000);

/**
 * |a - b| <= rel * scale per element; the scale is |b| unless given (a merged weight is judged against
 * the size of the weights it averages, since near-cancelling inputs leave a tiny b).
 */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, label: string, scale: ArrayLike<number> = expected): void {
  expect(actual.length, label).toBe(expected.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) / Math.abs(scale[i]!);
    if (err > worst) [worst, at] = [err, i];
  }
  expect(worst, `${label}: worst relative error at element ${at}: ${actual[at]} vs ${expected[at]}`).toBeLessThanOrEqual(rel);
}

describe('the PyTorch reference, end to end', () => {
  it("reproduces each task model's own validation metrics", () => {
    for (const [task, metrics] of Object.entries(reference.individual)) {
      for (const [name, value] of Object.entries(metrics)) expect(results.individual[task]![name], `${task} ${name}`).toBeCloseTo(value, 3);
    }
  });

  it('reproduces the batch-mode mask Fisher of every task model', async () => {
    for (const task of reference.tasks) {
      const ours = await readMaskFisher(path.join(out, 'fisher', `${task}.mask.safetensors`));
      const ref = readSafetensors(path.join(golden, task, 'mask_fisher.safetensors'));
      expectClose(ours.head, ref.float64('head_fisher'), 1e-3, `${task} head_fisher`);
      expectClose(ours.neuron, ref.float64('neuron_fisher'), 1e-3, `${task} neuron_fisher`);
      expect(ours.examples).toBe(128);
    }
  });

  it('reproduces the full empirical Fisher of every task model', () => {
    for (const task of reference.tasks) {
      const ours = readFullFisher(path.join(out, 'fisher', `${task}.full.safetensors`));
      const ref = readSafetensors(path.join(golden, task, 'full_fisher.safetensors'));
      const names = ref.names().filter((n) => !n.includes('.nonzero_'));
      // Elements below 1e-8 of the model's largest Fisher are rounding noise (key biases, whose true gradient is 0).
      const max = Math.max(...names.map((n) => ref.float32(n).reduce((m, v) => Math.max(m, v), 0)));
      for (const name of names) {
        const f = ref.float32(name);
        const keep = Array.from(f.keys()).filter((i) => f[i]! > 1e-8 * max);
        const got = ours.tensor(name);
        expectClose(keep.map((i) => got[i]!), keep.map((i) => f[i]!), 1e-3, `${task} ${name}`);
      }
    }
  });

  it('reproduces the merged encoder weights of every pair (mask-fisher, full-fisher, isotropic)', () => {
    for (const pair of Object.keys(reference.pairs)) {
      for (const [refName, method] of Object.entries(METHOD)) {
        const merged = readSafetensors(path.join(out, 'merges', pair, method, 'encoder', 'model.safetensors'));
        const inputs = pair.split('_').map((t) => readSafetensors(path.join(root, 'data/models', t, 'model.safetensors')));
        if (refName !== 'average') {
          const ref = readSafetensors(path.join(golden, 'merged', pair, `${refName}.safetensors`));
          for (const name of ref.names()) {
            const [a, b] = inputs.map((m) => m.float32(`bert.${name}`));
            const scale = a!.map((v, i) => Math.max(Math.abs(v), Math.abs(b![i]!)));
            expectClose(merged.float32(name), ref.float32(name), 1e-5, `${pair} ${method} ${name}`, scale);
          }
        }
        // Every tensor (embedding tables included) against the reference's float64 summaries.
        const stats = JSON.parse(readFileSync(path.join(golden, 'merged', pair, `${refName}_stats.json`), 'utf8')) as Record<string, { sum: number; abs_sum: number; first4: number[] }>;
        for (const [name, s] of Object.entries(stats)) {
          const t = merged.float32(name);
          let sum = 0;
          let abs = 0;
          for (const v of t) {
            sum += v;
            abs += Math.abs(v);
          }
          expect(Math.abs(abs - s.abs_sum) / s.abs_sum, `${pair} ${method} ${name} abs_sum`).toBeLessThan(1e-5);
          expect(Math.abs(sum - s.sum), `${pair} ${method} ${name} sum`).toBeLessThan(1e-5 * s.abs_sum);
          const firsts = inputs.map((m) => m.float32(`bert.${name}`).subarray(0, 4));
          const scale = s.first4.map((_, i) => Math.max(Math.abs(firsts[0]![i]!), Math.abs(firsts[1]![i]!)));
          expectClose(Array.from(t.subarray(0, 4)), s.first4, 1e-5, `${pair} ${method} ${name} first values`, scale);
        }
      }
    }
  });

  it('reproduces every task x method metric of the reference table', () => {
    for (const [pair, methods] of Object.entries(reference.pairs)) {
      for (const [refName, { metrics }] of Object.entries(methods)) {
        const ours = results.merges[pair]![METHOD[refName as keyof typeof METHOD]]!;
        for (const [task, values] of Object.entries(metrics)) {
          for (const [name, value] of Object.entries(values)) expect(ours[task]![name], `${pair} ${refName} ${task} ${name}`).toBeCloseTo(value, 3);
        }
      }
    }
  });

  it('writes the results table with every merge and the Fisher timings, as markdown and as Parquet rows', async () => {
    const md = readFileSync(path.join(out, 'results.md'), 'utf8');
    for (const pair of Object.keys(reference.pairs)) expect(md).toContain(`| ${pair} |`);
    expect(md).toMatch(/\| sst2 \| 128 \| [\d.]+ \| [\d.]+ \| 32 \| [\d.]+ \| [\d.]+ \| [\d.]+x \|/);
    const rows = (await lastValueFrom(parquetSource(path.join(out, 'results.parquet')).pipe(toArray()))).flatMap(({ batch }) => batch.toArray().map((r) => r.toJSON()));
    const row = rows.find((r) => r.merge === 'sst2_cola' && r.method === 'mask-fisher' && r.task === 'cola' && r.metric === 'matthews_correlation');
    expect(row?.value).toBe(results.merges.sst2_cola!['mask-fisher']!.cola!.matthews_correlation);
    expect(rows.filter((r) => r.method === 'own')).toHaveLength(Object.values(results.individual).flatMap(Object.keys).length);
  });
});
