// Gram statistics files (fisher --kind gram) through the CLI: fisher-add, merge --method regmean, and
// hostile files: each refused in one line naming the file, nothing written.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Tensor } from '@fisher-merge/core';
import { readSafetensors, writeSafetensors } from '@fisher-merge/checkpoint';
import { readGramStats } from '@fisher-merge/fisher';
import { tempDir } from '../support.ts';
import { cli, expectRefused, glueFile, modelDir } from './support.ts';

let root: string;
const gramOf = (task: string) => path.join(root, `${task}.gram.safetensors`);

/** A copy of a Gram file with some tensors replaced (metadata kept). */
async function editedGram(from: string, name: string, edit: (t: Tensor) => Tensor): Promise<string> {
  const st = readSafetensors(from);
  const tensors = Object.fromEntries(st.names().map((n) => [n, n === name ? edit(st.tensor(n)) : st.tensor(n)]));
  const file = path.join(tempDir('fisher-merge-gram-edit-'), path.basename(from));
  await writeSafetensors(file, tensors, st.metadata);
  return file;
}

const merge = (grams: [string, string], out: string, ridge = '1e-6') => cli(['merge', '--method', 'regmean', '--model', modelDir('sst2'), '--fisher', grams[0], '--model', modelDir('cola'), '--fisher', grams[1], '--param', `ridge=${ridge}`, '--out', out]);

beforeAll(() => {
  root = tempDir('fisher-merge-gram-cli-');
  for (const task of ['sst2', 'cola']) {
    const run = cli(['fisher', '--kind', 'gram', '--model', modelDir(task), '--data', glueFile(task, 'train'), '--task', task, '--samples', '16', '--batch-size', '8', '--threads', '1', '--out', gramOf(task)]);
    expect(run.status, run.stderr).toBe(0);
  }
}, 300_000);

describe('Gram files', () => {
  it('fisher-add adds sums and counts element by element', () => {
    const out = path.join(root, 'twice.safetensors');
    const run = cli(['fisher-add', '--fisher', gramOf('sst2'), '--fisher', gramOf('sst2'), '--out', out]);
    expect(run.status, run.stderr).toBe(0);
    const [one, two] = [readGramStats(gramOf('sst2')), readGramStats(out)];
    expect(two.examples).toBe(32);
    for (const [name, g] of one.grams) {
      expect(two.grams.get(name)!.count).toBe(2 * g.count);
      expect(Array.from(two.grams.get(name)!.sum)).toEqual(Array.from(g.sum, (v) => 2 * v));
    }
  });

  it('merge --method regmean refuses a singular sum by its tensor, and with a ridge writes finite merged models', () => {
    // 16 examples: 16 [CLS] rows cannot span the pooler's 128 dimensions.
    const singular = path.join(root, 'singular');
    expectRefused(merge([gramOf('sst2'), gramOf('cola')], singular, '0'), /^regmean: the summed Gram of 'bert\.[\w.]+\.weight' .* is singular to float64 precision/);
    expect(existsSync(singular)).toBe(false);
    const out = path.join(root, 'merged');
    const run = merge([gramOf('sst2'), gramOf('cola')], out);
    expect(run.status, run.stderr).toBe(0);
    const weights = readSafetensors(path.join(out, 'encoder', 'model.safetensors'));
    for (const name of weights.names()) expect(weights.float32(name).every(Number.isFinite), name).toBe(true);
  }, 120_000);

  it('refuses, in one line naming the file and writing nothing: another model, wrong shapes, NaN sums, counts of zero, another kind', async () => {
    const sst2 = gramOf('sst2');
    const cases: [string, [string, string], RegExp][] = [
      ['another model', [gramOf('cola'), gramOf('cola')], /cola\.gram\.safetensors: Fisher statistics were computed on another model/],
      ['wrong shape', [await editedGram(sst2, 'encoder.layer.1.output.dense.gram_sum', (t) => ({ ...t, shape: [128, 2048] })), gramOf('cola')], /gram_sum' has shape \[128,2048\], expected \[512,512\]/],
      ['NaN sum', [await editedGram(sst2, 'pooler.dense.gram_sum', (t) => ({ ...t, data: Float64Array.from(t.data as Float64Array, (v, i) => (i === 5 ? Number.NaN : v)) })), gramOf('cola')], /pooler\.dense\.gram_sum' holds NaN at element 5 \(\[0, 5\]\); statistics must be finite/],
      ['count of zero', [await editedGram(sst2, 'encoder.layer.0.intermediate.dense.gram_count', (t) => ({ ...t, data: Float64Array.of(0) })), gramOf('cola')], /intermediate\.dense\.gram_count' must be a positive whole number of positions, got 0/],
      ['a mask Fisher file', [await maskFisher(), gramOf('cola')], /not a Gram statistics file .*fisher --kind gram/],
    ];
    for (const [what, grams, pattern] of cases) {
      const out = path.join(root, `refused-${what.replaceAll(' ', '-')}`);
      const run = merge(grams, out);
      expectRefused(run, pattern);
      expect(run.stderr, what).toContain(path.basename(grams[0]));
      expect(existsSync(out), `${what}: output written`).toBe(false);
    }
  }, 300_000);
});

async function maskFisher(): Promise<string> {
  const file = path.join(root, 'sst2.mask.safetensors');
  const run = cli(['fisher', '--model', modelDir('sst2'), '--data', glueFile('sst2', 'train'), '--task', 'sst2', '--samples', '8', '--threads', '1', '--out', file]);
  expect(run.status, run.stderr).toBe(0);
  return file;
}
