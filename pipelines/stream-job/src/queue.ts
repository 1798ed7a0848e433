import { hostname } from 'node:os';
import { logEvent } from '@fisher-merge/core';
import { openEngine } from '@fisher-merge/engines';
import { modelFingerprint } from '@fisher-merge/model';
import { computeContribution } from '@fisher-merge/fisher';
import { loadTaskModel } from '@fisher-merge/task-model';
import { openRedis, QueueCoordinator, readJob, serveTask, type JobAnnouncement } from '@fisher-merge/queue';
import { UserError } from '@fisher-merge/core';
import type { QueueConfig, StreamConfig } from './config.ts';
import { runStreamJob, type StreamJobOptions, type StreamJobResult } from './stream-job.ts';

/**
 * `fisher-merge stream CONFIG` with `queue:` — the coordinator. The stream job as always (sources,
 * batches in read order, checkpoints, versions), except that each task's batches go to its Redis
 * stream and the workers' contributions come back to be folded in batch order.
 */
export async function runCoordinator(config: StreamConfig & { queue: QueueConfig }, options: Omit<StreamJobOptions, 'compute' | 'published'> = {}): Promise<StreamJobResult> {
  const { queue } = config;
  const redis = await openRedis(queue.url, 'stream coordinator');
  try {
    const coordinator = new QueueCoordinator(redis, queue.prefix);
    const tasks: JobAnnouncement['tasks'] = {};
    return await runStreamJob(config, {
      ...options,
      status: { queue: { url: queue.url, prefix: queue.prefix } },
      compute: async ({ name, model }) => {
        tasks[name] = { modelFingerprint: await modelFingerprint(model) };
        // Every task is opened before the first batch is cut: announce once all are known.
        if (Object.keys(tasks).length === config.tasks.length) await coordinator.announce({ mode: config.mode, tasks });
        return { contributions: (stop$) => coordinator.contributions(name, queue.maxPending, stop$, queue.claimIdleMs), inFlightBatches: queue.maxPending, close: async () => undefined };
      },
      published: (manifest, dir) => coordinator.announceVersion(manifest.version, dir, manifest),
    });
  } finally {
    redis.disconnect();
  }
}

/**
 * `fisher-merge worker CONFIG`: serves every task of the job (one loop per task, each with its own
 * engine and Redis connection) until `signal` aborts (SIGTERM), then finishes the batch in hand.
 */
export async function runWorker(config: StreamConfig & { queue: QueueConfig }, signal: AbortSignal, threads?: number): Promise<Record<string, number>> {
  const { queue } = config;
  const redis = await openRedis(queue.url, 'worker');
  try {
    const job = await readJob(redis, queue.prefix, queue.url);
    const consumer = `${hostname()}:${process.pid}`;
    const served = await Promise.all(config.tasks.map(async (task) => {
      const name = task.spec.name;
      const announced = job.tasks[name];
      if (!announced) throw new UserError(`worker: task '${name}' of the config is not part of the job announced under prefix '${queue.prefix}' (tasks: ${Object.keys(job.tasks).join(', ')})`);
      const { model } = await loadTaskModel(task.model, task.spec, { prefetchFingerprint: true });
      const fingerprint = await modelFingerprint(model);
      if (fingerprint !== announced.modelFingerprint) throw new UserError(`worker: ${task.model}: the model differs from the coordinator's for task '${name}' (fingerprint ${fingerprint.slice(0, 12)} vs ${announced.modelFingerprint.slice(0, 12)})`);
      const engine = await openEngine(config.engine, model.weights, { log: (line) => logEvent('worker.engine', { task: name, engine: line }), threads });
      const connection = redis.duplicate();
      connection.on('error', () => undefined);
      try {
        const n = await serveTask(connection, queue.prefix, name, (tokens) => computeContribution(engine, job.mode, tokens), { consumer, claimIdleMs: queue.claimIdleMs, signal });
        return [name, n] as const;
      } finally {
        connection.disconnect();
        await engine.dispose();
      }
    }));
    return Object.fromEntries(served);
  } finally {
    redis.disconnect();
  }
}
