import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import type { MaskFisher } from '@fisher-merge/fisher';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { mergeModels } from '@fisher-merge/merge-writer';
import { formatStreamStatus, loadStreamConfig, readLatest, readStreamStatus, runCoordinator, runStreamJob, type QueueConfig, type StreamConfig } from '@fisher-merge/stream-job';
import { expectSameStats, maskFisherOf, modelDir, publishParquet, taskRows, tempDir, writeStreamConfig } from '../stream-job/helpers.ts';
import { eventually, incoming, RedisServer, startWorker, stopWorker } from './helpers.ts';

// A guard against a hang, not a speed requirement: these runs start many processes on a loaded machine.
const HANG_GUARD_MS = 900_000;

const TASKS = ['sst2', 'cola'] as const;
// Sizes that are not multiples of the batch size: batches straddle files, and the last is smaller.
const PARTS = [13, 30, 7, 41, 5];
const ROWS = PARTS.reduce((a, b) => a + b, 0);

let redis: RedisServer;
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(() => redis?.stop());

async function configFor(dir: string, name: string, watch: Record<string, string>, mode: 'batch' | 'example', queue?: Record<string, unknown>): Promise<{ file: string; config: StreamConfig }> {
  const file = writeStreamConfig(path.join(dir, `${name}.yaml`), path.join(dir, name), TASKS.map((task) => ({ task, watch: watch[task]! })), { fisher: { mode, batch_size: 8 }, ...(queue ? { queue } : {}) });
  return { file, config: await loadStreamConfig(file) };
}

/** The coordinator drains the files through `workers` worker processes; returns its result and the queue status it left. */
async function throughWorkers(dir: string, watch: Record<string, string>, mode: 'batch' | 'example', workers: number, workerFlags: readonly string[] = []) {
  const name = `queue-${mode}-${workers}${workerFlags.join('')}`;
  const { file, config } = await configFor(dir, name, watch, mode, { url: redis.socket, prefix: name, max_pending: 4 });
  const client = redis.client();
  const running = runCoordinator(config as StreamConfig & { queue: QueueConfig }, { exitWhenIdleMs: 200, statusIntervalMs: 50 });
  // Workers join once the coordinator announced its job under the prefix.
  await eventually('job announced', async () => (await client.hget(`${name}:job`, 'run')) !== null);
  const started = Array.from({ length: workers }, () => startWorker(file, workerFlags));
  // Backpressure: however far the sources are ahead, a task's stream never holds more than max_pending batches.
  let finished = false;
  let peakBacklog = 0;
  const sampling = (async () => {
    while (!finished) for (const task of TASKS) peakBacklog = Math.max(peakBacklog, await client.xlen(`${name}:{${task}}:batches`));
  })();
  const result = await running.finally(() => (finished = true));
  await sampling;
  expect(peakBacklog).toBeLessThanOrEqual(4);
  const status = await readStreamStatus(config.out);
  // Each version is announced for consumers: the last entry of <prefix>:versions is the last version.
  const announced = (await client.xrange(`${name}:versions`, '-', '+')).at(-1)![1];
  expect(announced.slice(0, 4)).toEqual(['version', String(result.lastVersion), 'path', path.join(config.out, 'versions', String(result.lastVersion))]);
  expect(JSON.parse(announced[5]!).version).toBe(result.lastVersion);
  const exits = await Promise.all(started.map((w) => stopWorker(w.child)));
  expect(exits, started.map((w) => w.stderr()).join('\n')).toEqual(started.map(() => 0));
  client.disconnect();
  return { result, status, out: config.out };
}

describe('coordinator and workers on Redis Streams', () => {
  for (const mode of ['batch', 'example'] as const) {
    it(`${mode} mode: 1, 2 and 3 workers give statistics bit-identical to the single-process job and to one-shot fisher; the last version equals merge`, async () => {
      const dir = tempDir();
      const watch = await incoming(dir, TASKS, PARTS);
      const single = await runStreamJob((await configFor(dir, 'single', watch, mode)).config, { exitWhenIdleMs: 200 });
      const oneShot: MaskFisher[] = [];
      for (const task of TASKS) {
        const file = path.join(dir, `${task}-all.parquet`);
        publishParquet(file, await taskRows(task, ROWS));
        oneShot.push((await computeMaskFisher({ modelDir: modelDir(task), data: file, task: glueTask(task), batchSize: 8, mode, engine: 'onnx' })).stats);
      }
      TASKS.forEach((task, t) => expectSameStats(single.stats[task]!, oneShot[t]!));

      for (const workers of [1, 2, 3]) {
        const { result, status, out } = await throughWorkers(dir, watch, mode, workers);
        expect(result.stoppedBy).toBe('drained');
        TASKS.forEach((task, t) => expectSameStats(result.stats[task]!, oneShot[t]!));
        // Every batch was acknowledged; the workers' counts add up to the batches folded.
        const queue = status.queue as Exclude<typeof status.queue, string | null>;
        const shown = formatStreamStatus(status);
        expect(shown).toContain('batches per worker');
        for (const worker of Object.keys(queue.sst2!.done)) expect(shown).toContain(worker);
        for (const task of TASKS) {
          expect(queue[task]!.pending).toBe(0);
          expect(queue[task]!.backlog).toBe(0);
          expect(Object.values(queue[task]!.done).reduce((a, b) => a + b, 0)).toBe(oneShot[TASKS.indexOf(task)]!.batches);
        }
        if (workers === 2) {
          const version = await readLatest(out);
          const merged = path.join(dir, `merged-${mode}`);
          await mergeModels({ models: TASKS.map(modelDir), maskFishers: oneShot, method: 'mask-fisher', out: merged });
          for (const folder of ['encoder', ...TASKS]) {
            const tensors = (d: string) => readFileSync(path.join(d, folder, 'model.safetensors'));
            expect(tensors(path.join(out, 'versions', String(version))).equals(tensors(merged))).toBe(true);
          }
        }
      }
    }, HANG_GUARD_MS);
  }

  it('a single-process job and workers given the same engine thread count are bit-identical (onnxruntime sums depend on it)', async () => {
    const dir = tempDir();
    const watch = await incoming(dir, TASKS, PARTS);
    const single = await runStreamJob((await configFor(dir, 'single-one-thread', watch, 'batch')).config, { exitWhenIdleMs: 200, threads: 1 });
    const { result } = await throughWorkers(dir, watch, 'batch', 2, ['--threads', '1']);
    for (const task of TASKS) expectSameStats(result.stats[task]!, maskFisherOf(single.stats[task]!));
  }, HANG_GUARD_MS);
});
