// In-memory Gram sums (a stream job's) are checked as Gram files are: one line each, nothing written.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import type { GramStats } from '@fisher-merge/fisher';
import { computeGrams } from '@fisher-merge/merge-job';
import { mergeModels } from '@fisher-merge/merge-writer';
import { modelDir, publishParquet, taskRows, tempDir } from '../stream-job/helpers.ts';

async function grams(dir: string, task: string): Promise<GramStats> {
  const file = path.join(dir, `${task}.parquet`);
  publishParquet(file, await taskRows(task, 16));
  return (await computeGrams({ modelDir: modelDir(task), data: file, task: glueTask(task), batchSize: 8, engine: 'onnx' })).stats;
}

/** The same statistics with one input's Gram replaced. */
function withGram(stats: GramStats, input: string, gram: (g: { sum: Float64Array; count: number }) => { sum: Float64Array; count: number }): GramStats {
  return { ...stats, grams: new Map([...stats.grams].map(([name, g]) => [name, name === input ? gram(g) : g])) };
}

describe('mergeModels with in-memory Gram sums', () => {
  it('refuses sums of another model, a count of zero and a non-finite sum, naming the task and the input', async () => {
    const dir = tempDir();
    const [sst2, cola] = [await grams(dir, 'sst2'), await grams(dir, 'cola')];
    const models = [modelDir('sst2'), modelDir('cola')];
    const out = path.join(dir, 'merged');
    const merge = (stats: GramStats[]) => mergeModels({ models, grams: stats, method: 'regmean', params: { alpha: 0.9 }, out });
    await expect(merge([sst2, sst2])).rejects.toThrow(/^statistics of task sst2: Fisher statistics were computed on another model .*, not .*cola/);
    await expect(merge([sst2, withGram(cola, 'pooler.dense', (g) => ({ ...g, count: 0 }))])).rejects.toThrow("statistics of task cola: Gram count of 'pooler.dense' is 0; it needs at least one position");
    const nan = withGram(cola, 'pooler.dense', (g) => ({ ...g, sum: g.sum.map((v, k) => (k === 5 ? Number.NaN : v)) }));
    await expect(merge([sst2, nan])).rejects.toThrow("statistics of task cola: tensor 'pooler.dense.gram_sum' holds NaN at element 5");
    expect(existsSync(out)).toBe(false);
    // The same sums, good, merge.
    await merge([sst2, cola]);
    expect(existsSync(path.join(out, 'encoder', 'model.safetensors'))).toBe(true);
  });
});
