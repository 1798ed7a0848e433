// Input Gram statistics (RegMean, shared/docs/method.md section 7) against the PyTorch golden, and their additivity.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { glueTask } from '@fisher-merge/data';
import { addGramStats, gramInputs, openGramFile, readGramStats, writeGramStats, type GramStats } from '@fisher-merge/fisher';
import { computeGrams } from '@fisher-merge/merge-job/fisher-job';
import { describeModel } from '@fisher-merge/model';
import { largestRelative, tempDir } from '../support.ts';

const root = path.resolve(import.meta.dirname, '../..');
const model = path.join(root, 'data/models/sst2');
const data = path.join(root, 'data/glue/sst2/train-00000-of-00001.parquet');
const golden = readSafetensors(path.join(root, 'test/fixtures/golden/sst2/regmean_grams.safetensors'));

const grams = (engine: 'onnx' | 'tfjs', samples: number, batchSize: number, extra: { seed?: number } = {}) =>
  computeGrams({ modelDir: model, data, task: glueTask('sst2'), samples, batchSize, engine, threads: 1, maxLength: 128, ...extra }).then((r) => r.stats);

describe('Gram statistics of the sst2 fixture model, first 128 training rows', () => {
  it.each(['onnx', 'tfjs'] as const)('%s reproduces the golden sums and counts of the layer-0 query input and the pooler input', async (engine) => {
    const stats = await grams(engine, 128, 32);
    expect(stats.examples).toBe(128);
    for (const name of ['encoder.layer.0.attention.self.query', 'pooler.dense']) {
      const ours = stats.grams.get(name)!;
      expect(ours.count, name).toBe(golden.float64(`${name}.n`)[0]);
      // Float32 forwards of two implementations: their inputs differ in the last bits, their float64 sums by as much.
      expect(largestRelative(ours.sum, golden.float64(`${name}.S`)), name).toBeLessThan(1e-5);
    }
  }, 300_000);

  it("names one input per layer and linear role (query's shared with key and value) and the pooler's", async () => {
    const inputs = gramInputs(await describeModel(model));
    expect(inputs.map((i) => `${i.name}:${i.dim}`)).toEqual([
      ...[0, 1].flatMap((l) => [`encoder.layer.${l}.attention.self.query:128`, `encoder.layer.${l}.attention.output.dense:128`, `encoder.layer.${l}.intermediate.dense:128`, `encoder.layer.${l}.output.dense:512`]),
      'pooler.dense:128',
    ]);
  });

  it('does not depend on the batching (padding is excluded); fisher-add adds sums, counts and examples', async () => {
    const whole = await grams('onnx', 64, 32);
    const small = await grams('onnx', 64, 5);
    const dir = tempDir('fisher-merge-gram-');
    const file = (name: string, s: GramStats) => writeGramStats(path.join(dir, name), s).then(() => path.join(dir, name));
    const [a, b] = await Promise.all([file('whole.safetensors', whole), file('small.safetensors', small)]);
    const [x, y] = [readGramStats(a), readGramStats(b)];
    for (const input of x.inputs) {
      expect(y.grams.get(input.name)!.count).toBe(x.grams.get(input.name)!.count);
      expect(largestRelative(y.grams.get(input.name)!.sum, x.grams.get(input.name)!.sum), input.name).toBeLessThan(1e-12);
    }
    const first = await grams('onnx', 32, 32);
    const second = addGramStats(first, first);
    expect(second.examples).toBe(64);
    for (const input of first.inputs) {
      const f = first.grams.get(input.name)!;
      expect(second.grams.get(input.name)!.count).toBe(2 * f.count);
      expect(Array.from(second.grams.get(input.name)!.sum)).toEqual(Array.from(f.sum, (v) => v + v));
    }
    expect(x.modelFingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(() => addGramStats(x, { ...x, task: 'other' })).toThrow(/different task/);
  }, 300_000);

  it('round-trips through its file: the same sums, counts and metadata', async () => {
    const stats = await grams('onnx', 8, 8);
    const file = path.join(tempDir('fisher-merge-gram-'), 'g.safetensors');
    await writeGramStats(file, stats);
    const opened = openGramFile(file, gramInputs(await describeModel(model)));
    expect(opened.meta).toEqual({ examples: 8, task: 'sst2', modelFingerprint: stats.modelFingerprint, dataFingerprint: stats.dataFingerprint });
    for (const [name, g] of stats.grams) {
      expect(opened.counts.get(name)).toBe(g.count);
      expect(opened.sum(name)).toEqual(g.sum);
    }
  }, 120_000);
});
