import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import type { MaskFisher } from '@fisher-merge/fisher';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { mergeModels } from '@fisher-merge/merge-writer';
import { loadStreamConfig, outLayout, readLatest, readStreamState, runStreamJob } from '@fisher-merge/stream-job';
import { eventually } from '../support.ts';
import { maskFisherOf, modelDir, publishParquet, split, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

const TASKS = ['sst2', 'cola'] as const;
const ROWS = 120;
// Sizes that are not multiples of the batch size: batches straddle files.
const PARTS = [13, 30, 7, 41, 29];

async function oneShot(dir: string, task: string, mode: 'batch' | 'example', batchSize: number): Promise<MaskFisher> {
  const file = path.join(dir, `${task}-all.parquet`);
  publishParquet(file, await taskRows(task, ROWS));
  return (await computeMaskFisher({ modelDir: modelDir(task), data: file, task: glueTask(task), batchSize, mode, engine: 'onnx' })).stats;
}

/**
 * Runs the job while each task's rows arrive as PARTS files: each part once the job has folded every
 * full batch of the parts before it; then drains it (no idle timeout to outlast).
 */
async function streamInParts(dir: string, mode: 'batch' | 'example') {
  const watch = (task: string) => path.join(dir, 'incoming', task);
  for (const task of TASKS) mkdirSync(watch(task), { recursive: true });
  const config = await loadStreamConfig(writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), TASKS.map((task) => ({ task, watch: watch(task) })), { fisher: { mode, batch_size: 8 } }));
  const drain = new AbortController();
  const checkpoint = outLayout(config.out).checkpoint;
  const arrive = (async () => {
    const parts = await Promise.all(TASKS.map(async (task) => split(await taskRows(task, ROWS), PARTS)));
    let published = 0;
    for (let i = 0; i < PARTS.length; i++) {
      TASKS.forEach((task, t) => publishParquet(path.join(watch(task), `part-${i}.parquet`), parts[t]![i]!));
      published += PARTS[i]!;
      const full = published - (published % 8);
      await eventually(`part ${i} folded`, async () => Object.values((await readStreamState(checkpoint).catch(() => undefined))?.tasks ?? {}).filter((t) => t.stats.examples >= full).length === TASKS.length);
    }
    drain.abort();
  })();
  const result = await runStreamJob(config, { drain: drain.signal });
  await arrive;
  return { result, out: config.out };
}

function tensorsOf(dir: string): Buffer {
  return readFileSync(path.join(dir, 'model.safetensors'));
}

describe('stream job equivalence with the one-shot commands', () => {
  it('batch mode: files arriving over time give exactly the one-shot Fisher, and the last version equals merge on it', async () => {
    const dir = tempDir();
    const { result, out } = await streamInParts(dir, 'batch');
    const reference = await Promise.all(TASKS.map((task) => oneShot(dir, task, 'batch', 8)));
    TASKS.forEach((task, t) => {
      const got = maskFisherOf(result.stats[task]!);
      expect(got.examples).toBe(ROWS);
      expect(got.batches).toBe(reference[t]!.batches);
      expect(got.dataFingerprint).toBe(reference[t]!.dataFingerprint);
      expect(Array.from(got.head)).toEqual(Array.from(reference[t]!.head));
      expect(Array.from(got.neuron)).toEqual(Array.from(reference[t]!.neuron));
    });

    const version = await readLatest(out);
    expect(version).toBe(result.lastVersion);
    const published = path.join(out, 'versions', String(version));
    const merged = path.join(dir, 'merged');
    await mergeModels({ models: TASKS.map(modelDir), maskFishers: reference, method: 'mask-fisher', out: merged });
    for (const folder of ['encoder', ...TASKS]) expect(tensorsOf(path.join(published, folder)).equals(tensorsOf(path.join(merged, folder)))).toBe(true);
    const manifest = JSON.parse(readFileSync(path.join(published, 'manifest.json'), 'utf8'));
    expect(manifest.tasks.sst2.examples).toBe(ROWS);
    expect(manifest.tasks.sst2.source.files_consumed).toEqual(PARTS.map((_, i) => `part-${i}.parquet`));
  });

  it('example mode: equal to the one-shot Fisher to float tolerance, whatever the batch boundaries', async () => {
    const dir = tempDir();
    const { result } = await streamInParts(dir, 'example');
    // One-shot with another batch size: example-mode statistics do not depend on batching.
    const reference = await Promise.all(TASKS.map((task) => oneShot(dir, task, 'example', 32)));
    TASKS.forEach((task, t) => {
      const got = maskFisherOf(result.stats[task]!);
      expect(got.examples).toBe(ROWS);
      expect(got.dataFingerprint).toBe(reference[t]!.dataFingerprint);
      const close = (a: Float64Array, b: Float64Array) => a.forEach((v, k) => expect(Math.abs(v - b[k]!)).toBeLessThanOrEqual(1e-5 * Math.abs(b[k]!) + 1e-12));
      close(got.head, reference[t]!.head);
      close(got.neuron, reference[t]!.neuron);
    });
  });
});
