import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { hostname } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import type { MaskFisher } from '@fisher-merge/fisher';
import type { TaskStatistics } from '@fisher-merge/stream-job';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { queueStatus } from '@fisher-merge/queue';
import { loadStreamConfig, outLayout, readStreamState, runCoordinator, type QueueConfig, type StreamConfig } from '@fisher-merge/stream-job';
import { expectSameStats, modelDir, publishParquet, taskRows, tempDir, writeStreamConfig } from '../stream-job/helpers.ts';
import { CLI, eventually, incoming, RedisServer, startWorker, stopWorker } from './helpers.ts';

// A guard against a hang, not a speed requirement: these runs start many processes on a loaded machine.
const HANG_GUARD_MS = 900_000;

const TASKS = ['sst2', 'cola'] as const;
const PARTS = [37, 64, 29, 62];
const ROWS = PARTS.reduce((a, b) => a + b, 0);

let reference: MaskFisher[];
beforeAll(async () => {
  const dir = tempDir();
  reference = [];
  for (const task of TASKS) {
    const file = path.join(dir, `${task}.parquet`);
    publishParquet(file, await taskRows(task, ROWS));
    reference.push((await computeMaskFisher({ modelDir: modelDir(task), data: file, task: glueTask(task), batchSize: 8, mode: 'batch', engine: 'onnx' })).stats);
  }
});

async function setup(redis: RedisServer, name: string, queue: Record<string, unknown> = {}) {
  const dir = tempDir();
  const watch = await incoming(dir, TASKS, PARTS);
  const file = writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), TASKS.map((task) => ({ task, watch: watch[task]! })), {
    queue: { url: redis.socket, prefix: name, max_pending: 2, claim_idle_ms: 300, ...queue },
  });
  const config = (await loadStreamConfig(file)) as StreamConfig & { queue: QueueConfig };
  return { file, config, checkpoint: outLayout(config.out).checkpoint };
}

const folded = async (checkpoint: string): Promise<number> => Object.values((await readStreamState(checkpoint).catch(() => undefined))?.tasks ?? {}).reduce((n, t) => n + t.stats.examples, 0);
const midway = (checkpoint: string) => async () => {
  const n = await folded(checkpoint);
  return n > 0 && n < TASKS.length * ROWS;
};

function expectReference(stats: Record<string, TaskStatistics>): void {
  TASKS.forEach((task, t) => expectSameStats(stats[task]!, reference[t]!));
}

/**
 * Runs `body` on a fresh Redis with the job `name` set up; the workers it starts must exit cleanly
 * when stopped afterwards; workers, client and Redis are stopped whatever happens.
 */
async function withWorkers(
  name: string,
  redisOptions: { aof?: boolean },
  body: (run: { redis: RedisServer; client: ReturnType<RedisServer['client']>; job: Awaited<ReturnType<typeof setup>>; startWorkers: (n: number) => void }) => Promise<void>,
): Promise<void> {
  const redis = await RedisServer.start(redisOptions);
  const client = redis.client();
  const workers: ChildProcess[] = [];
  try {
    const job = await setup(redis, name);
    await body({ redis, client, job, startWorkers: (n) => workers.push(...Array.from({ length: n }, () => startWorker(job.file).child)) });
    for (const w of workers) expect(await stopWorker(w)).toBe(0);
  } finally {
    for (const w of workers) await stopWorker(w);
    client.disconnect();
    await redis.stop();
  }
}

describe('coordinator and workers under faults', () => {
  it('a batch entry lost from Redis (as a crash between fsyncs loses one) is appended again; the statistics equal the uninterrupted run', async () => {
    await withWorkers('lost-entry', {}, async ({ client, job, startWorkers }) => {
      const running = runCoordinator(job.config, { exitWhenIdleMs: 200 });
      const batches = 'lost-entry:{sst2}:batches';
      await eventually('a batch appended', async () => (await client.xlen(batches)) > 0);
      // No worker runs yet, so nobody has read it: the first batch is gone before any result exists.
      const [[id]] = (await client.xrange(batches, '-', '+', 'COUNT', 1)) as [string, string[]][];
      expect(await client.xdel(batches, id!)).toBe(1);
      startWorkers(2);
      expectReference((await running).stats);
    });
  }, HANG_GUARD_MS);

  it('kill -9 of a worker mid-batch: another worker claims its entries after claim_idle_ms and finishes them', async () => {
    await withWorkers('killed-worker', {}, async ({ client, job }) => {
      const running = runCoordinator(job.config, { exitWhenIdleMs: 200 });
      await eventually('job announced', async () => (await client.hget('killed-worker:job', 'run')) !== null);
      // Kill workers while they hold an entry, until one died holding one (its entries stay pending).
      const pendingOf = async (consumer: string) => {
        const queue = await queueStatus(client, 'killed-worker', TASKS);
        return TASKS.some((task) => (queue[task]!.consumers.find((c) => c.name === consumer)?.pending ?? 0) > 0);
      };
      let orphaned = false;
      for (let attempt = 0; attempt < 5 && !orphaned; attempt++) {
        const victim = startWorker(job.file);
        const consumer = () => `${hostname()}:${victim.child.pid}`;
        await eventually('the worker holds an entry', () => pendingOf(consumer()));
        victim.child.kill('SIGKILL');
        await once(victim.child, 'exit');
        orphaned = await pendingOf(consumer());
      }
      expect(orphaned).toBe(true);
      const rescuer = startWorker(job.file);
      const result = await running;
      expect(await stopWorker(rescuer.child), rescuer.stderr()).toBe(0);
      expect(rescuer.stderr()).toContain('"worker.claimed"');
      expectReference(result.stats);
    });
  }, HANG_GUARD_MS);

  it('kill -9 of the coordinator: the restarted coordinator resumes from its checkpoint, nothing counted twice or lost', async () => {
    await withWorkers('killed-coordinator', {}, async ({ client, job }) => {
      const coordinator = spawn(process.execPath, [CLI, 'stream', job.file], { stdio: 'ignore' });
      await eventually('job announced', async () => (await client.hget('killed-coordinator:job', 'run')) !== null);
      const worker = startWorker(job.file);
      await eventually('the coordinator folded part of the data', midway(job.checkpoint));
      coordinator.kill('SIGKILL');
      await once(coordinator, 'exit');
      // Wherever the kill landed (even after the last fold), the restart must resume from exactly the checkpoint it left.
      const atKill = (await readStreamState(job.checkpoint))!;
      const restarted = spawn(process.execPath, [CLI, 'stream', job.file, '--exit-when-idle', '200'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      restarted.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const [code] = await once(restarted, 'exit');
      expect(code, stderr).toBe(0);
      const started = stderr.split('\n').filter((l) => l.includes('"stream.started"')).map((l) => JSON.parse(l) as { tasks: { task: string; examples: number; resume: unknown }[] });
      expect(started.map((e) => e.tasks)).toEqual([TASKS.map((task) => ({ task, examples: atKill.tasks[task]!.stats.examples, files_consumed: atKill.tasks[task]!.cursor.consumed.size, resume: atKill.tasks[task]!.cursor.current ?? null }))]);
      expect(await stopWorker(worker.child), worker.stderr()).toBe(0);
      expectReference(Object.fromEntries(Object.entries((await readStreamState(job.checkpoint))!.tasks).map(([t, s]) => [t, s.stats])));
    });
  }, HANG_GUARD_MS);

  it('a Redis restart with AOF on: coordinator and workers reconnect and end with the uninterrupted statistics', async () => {
    await withWorkers('restarted-redis', { aof: true }, async ({ redis, client, job, startWorkers }) => {
      const running = runCoordinator(job.config, { exitWhenIdleMs: 200 });
      await eventually('job announced', async () => (await client.hget('restarted-redis:job', 'run')) !== null);
      startWorkers(2);
      await eventually('the coordinator folded part of the data', midway(job.checkpoint));
      await redis.restart(true);
      const result = await running;
      expect(await folded(job.checkpoint)).toBe(TASKS.length * ROWS);
      expectReference(result.stats);
    });
  }, HANG_GUARD_MS);
});
