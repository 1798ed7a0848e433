import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import type { MaskFisher } from '@fisher-merge/fisher';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { outLayout, readStreamState } from '@fisher-merge/stream-job';
import { errorLine, logLines } from '../support.ts';
import { expectSameStats, modelDir, publishParquet, split, taskRows, tempDir, writeStreamConfig } from '../stream-job/helpers.ts';
import { eventually, RedisServer, startCli, startWorker, stopWorker, withRedis } from './helpers.ts';

// A guard against a hang, not a speed requirement: these runs start many processes on a loaded machine.
const HANG_GUARD_MS = 900_000;

const TASK = 'sst2';
// Files present at start, then files that arrive after the fault, so work is left for after it whatever the timing.
const FIRST = [37, 64];
const LATER = [29, 62];
const PARTS = [...FIRST, ...LATER];
const ROWS = PARTS.reduce((a, b) => a + b, 0);

let reference: MaskFisher;
let parts: ReturnType<typeof split>;
beforeAll(async () => {
  const rows = await taskRows(TASK, ROWS);
  const file = path.join(tempDir(), `${TASK}.parquet`);
  publishParquet(file, rows);
  reference = (await computeMaskFisher({ modelDir: modelDir(TASK), data: file, task: glueTask(TASK), batchSize: 8, mode: 'batch', engine: 'onnx' })).stats;
  parts = split(rows, PARTS);
});

/** A job over FIRST's files; `later()` publishes LATER's. Its coordinator runs until stopped (no drain), so a fault never races its end. */
function setup(redis: RedisServer, name: string, queue: Record<string, unknown> = {}) {
  const dir = tempDir();
  const watch = path.join(dir, 'incoming');
  mkdirSync(watch, { recursive: true });
  const publish = (from: number, to: number) => parts.slice(from, to).forEach((part, i) => publishParquet(path.join(watch, `part-${String(from + i).padStart(3, '0')}.parquet`), part));
  publish(0, FIRST.length);
  const out = path.join(dir, 'out');
  const file = writeStreamConfig(path.join(dir, 'config.yaml'), out, [{ task: TASK, watch }], {
    queue: { url: redis.socket, prefix: name, max_pending: 2, claim_idle_ms: 300, connect_timeout_s: 600, ...queue },
  });
  return { file, later: () => publish(FIRST.length, PARTS.length), checkpoint: outLayout(out).checkpoint };
}

const folded = async (checkpoint: string): Promise<number> => (await readStreamState(checkpoint).catch(() => undefined))?.tasks[TASK]?.stats.examples ?? 0;
const firstFold = (checkpoint: string) => eventually('a batch folded', async () => (await folded(checkpoint)) > 0, Infinity);
const events = (stderr: string, event: string) => logLines(stderr).filter((l) => l.event === event);

/** The job `name` running: its coordinator and one worker per flag list started, and a first batch folded. */
async function running(redis: RedisServer, name: string, workerFlags: string[][], queue: Record<string, unknown> = {}) {
  const job = setup(redis, name, queue);
  const coordinator = startCli(['stream', job.file]);
  const workers = workerFlags.map((flags) => startWorker(job.file, flags));
  await firstFold(job.checkpoint);
  return { job, coordinator, workers };
}

/** Waits until every row is folded, stops the coordinator (SIGTERM, exit 0) and checks the statistics. */
async function finish(coordinator: ReturnType<typeof startCli>, checkpoint: string): Promise<void> {
  await eventually('every row folded', async () => {
    if (coordinator.child.exitCode !== null) throw new Error(`the coordinator exited (${coordinator.child.exitCode}):\n${coordinator.stderr()}`);
    return (await folded(checkpoint)) === ROWS;
  }, Infinity);
  coordinator.child.kill('SIGTERM');
  const [code] = await once(coordinator.child, 'exit');
  expect(code, coordinator.stderr()).toBe(0);
  expectSameStats((await readStreamState(checkpoint))!.tasks[TASK]!.stats, reference);
}

describe('workers and coordinator in any order, through restarts', () => {
  it('workers started first wait (one line each), join when the coordinator announces, and follow a kill -9 restart of it without a restart of their own', async () => {
    await withRedis(async (redis) => {
      const job = setup(redis, 'order');
      const workers = [startWorker(job.file), startWorker(job.file)];
      for (const w of workers) await w.line('worker.waiting');
      const first = startCli(['stream', job.file]);
      await firstFold(job.checkpoint);
      first.child.kill('SIGKILL');
      await once(first.child, 'exit');
      const second = startCli(['stream', job.file]);
      job.later();
      await finish(second, job.checkpoint);
      const log = workers.map((w) => w.stderr()).join('');
      expect(events(log, 'worker.waiting')).toHaveLength(2);
      expect(events(log, 'worker.joined').length).toBeGreaterThanOrEqual(2);
      // At least one worker took entries of the second run, and said it followed it.
      expect(events(log, 'worker.joined').some((l) => l.followed === 'a new coordinator run')).toBe(true);
      for (const w of workers) expect(await stopWorker(w.child), w.stderr()).toBe(0);
    });
  }, HANG_GUARD_MS);

  it('Redis restarted without persistence mid-run: the coordinator announces again and re-appends what was lost; the statistics equal the uninterrupted run', async () => {
    await withRedis(async (redis) => {
      const { job, coordinator, workers } = await running(redis, 'amnesia', [[], []]);
      await redis.restart(true);
      job.later();
      await coordinator.line('queue.redis_reconnected');
      await finish(coordinator, job.checkpoint);
      for (const w of workers) expect(await stopWorker(w.child), w.stderr()).toBe(0);
    });
  }, HANG_GUARD_MS);

  it('SIGTERM to a worker while Redis is down: it stops within its stop timeout (exit 0), what it held stays for others; the job ends with the uninterrupted statistics', async () => {
    await withRedis(async (redis) => {
      const { job, coordinator, workers: [stranded] } = await running(redis, 'sigterm', [['--stop-timeout-s', '1']]);
      await redis.stop('SIGKILL');
      expect(await stopWorker(stranded.child), stranded.stderr()).toBe(0);
      expect(events(stranded.stderr(), 'worker.stopped')).toHaveLength(1);
      await redis.start();
      const rescuer = startWorker(job.file);
      job.later();
      await finish(coordinator, job.checkpoint);
      expect(await stopWorker(rescuer.child), rescuer.stderr()).toBe(0);
    });
  }, HANG_GUARD_MS);

  it('a coordinator with batches waiting and no worker says so (queue.no_workers), and goes on once a worker comes', async () => {
    await withRedis(async (redis) => {
      const job = setup(redis, 'lonely');
      job.later();
      const coordinator = startCli(['stream', job.file]);
      const silence = await coordinator.line('queue.no_workers');
      expect(silence).toMatchObject({ task: TASK, waiting_batches: 2 });
      const worker = startWorker(job.file);
      await finish(coordinator, job.checkpoint);
      expect(await stopWorker(worker.child), worker.stderr()).toBe(0);
    });
  }, HANG_GUARD_MS);

  it('a coordinator whose Redis stays away longer than queue.connect_timeout_s gives up with one clear line (exit 1), its checkpoint intact', async () => {
    await withRedis(async (redis) => {
      const { job, coordinator, workers: [worker] } = await running(redis, 'gone', [[]], { connect_timeout_s: 1 });
      await redis.stop('SIGKILL');
      const [code] = await once(coordinator.child, 'exit');
      expect(code).toBe(1);
      expect(errorLine(coordinator.stderr())).toBe(`stream coordinator: lost Redis at ${redis.socket} (queue.url) for 1 s (queue.connect_timeout_s); the checkpoint holds everything folded, restart when Redis is back`);
      expect(await folded(job.checkpoint)).toBeGreaterThan(0);
      expect(await stopWorker(worker.child)).toBe(0);
    });
  }, HANG_GUARD_MS);
});
