import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadStreamConfig, outLayout, readLatest, readStreamState, relativeChange, runStreamJob } from '@fisher-merge/stream-job';
import { eventually } from '../support.ts';
import { maskFisherOf, publishParquet, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

const until = (check: () => Promise<boolean>) => eventually('the job state', check);

describe('stream job control', () => {
  it('publishes on the publish control file; the stop file stops it with an incomplete batch left unread for the next run', async () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    publishParquet(path.join(watch, 'part-0.parquet'), await taskRows('sst2', 20));
    const config = await loadStreamConfig(writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch }], { publish: { on_stop: false } }));
    const layout = outLayout(config.out);
    const running = runStreamJob(config, { statusIntervalMs: 50 });
    // Two full batches of 8; the last 4 rows wait for more data.
    await until(async () => (await readStreamState(layout.checkpoint))?.tasks.sst2?.stats.examples === 16);
    mkdirSync(path.dirname(layout.publishFile), { recursive: true });
    writeFileSync(layout.publishFile, '');
    await until(async () => (await readLatest(config.out)) === 1);
    writeFileSync(layout.stopFile, '');
    const stopped = await running;
    expect(stopped.stoppedBy).toBe('stop');
    const state = await readStreamState(layout.checkpoint);
    expect(state!.tasks.sst2!.stats.examples).toBe(16);
    expect(state!.tasks.sst2!.cursor.current).toEqual({ file: 'part-0.parquet', row: 16 });
    expect(state!.published!.version).toBe(1);

    // Drained restart: the 4 waiting rows form the last, smaller batch.
    const drained = await runStreamJob(config, { exitWhenIdleMs: 300 });
    expect(drained.stats.sst2!.examples).toBe(20);
    expect(drained.stoppedBy).toBe('drained');
    expect((await readStreamState(layout.checkpoint))!.tasks.sst2!.cursor).toEqual({ consumed: new Set(['part-0.parquet']) });
  });

  it('decay (off by default) forgets old Fisher mass; relative change compares mean Fisher', async () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    publishParquet(path.join(watch, 'part-0.parquet'), await taskRows('sst2', 32));
    const plain = await runStreamJob(await loadStreamConfig(writeStreamConfig(path.join(dir, 'plain.yaml'), path.join(dir, 'plain'), [{ task: 'sst2', watch }])), { exitWhenIdleMs: 300 });
    const decayed = await runStreamJob(await loadStreamConfig(writeStreamConfig(path.join(dir, 'decay.yaml'), path.join(dir, 'decay'), [{ task: 'sst2', watch }], { fisher: { mode: 'batch', batch_size: 8, decay_half_life: 8 } })), { exitWhenIdleMs: 300 });
    // Four batches of 8 with a half-life of 8 examples: weights 1/8, 1/4, 1/2, 1 per batch.
    expect(plain.stats.sst2!.examples).toBe(32);
    expect(decayed.stats.sst2!.examples).toBeCloseTo(8 * (1 / 8 + 1 / 4 + 1 / 2 + 1), 10);
    expect(maskFisherOf(decayed.stats.sst2!).head[0]).toBeLessThan(maskFisherOf(plain.stats.sst2!).head[0]!);

    const stats = maskFisherOf(plain.stats.sst2!);
    expect(relativeChange(stats, undefined)).toBe(Infinity);
    expect(relativeChange(stats, { examples: stats.examples, head: stats.head, neuron: stats.neuron })).toBe(0);
    expect(relativeChange(stats, { examples: stats.examples * 2, head: stats.head, neuron: stats.neuron })).toBeCloseTo(1, 12);
  });
});
