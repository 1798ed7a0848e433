import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { logEvent, UserError } from '@fisher-merge/core';
import { openEngine } from '@fisher-merge/engines';
import { computeContribution } from '@fisher-merge/fisher';
import { withMetricsServer } from '@fisher-merge/metrics';
import { modelFingerprint, type Engine, type EncoderConfig } from '@fisher-merge/model';
import { openRedis, QueueCoordinator, serveTask, waitForJob, type JobAnnouncement } from '@fisher-merge/queue';
import { loadTaskModel } from '@fisher-merge/task-model';
import type { QueueConfig, StreamConfig, StreamTask } from './config.ts';
import { runStreamJob, type StreamJobOptions, type StreamJobResult } from './stream-job.ts';

/**
 * `fisher-merge stream CONFIG` with `queue:` — the coordinator. The stream job as always (sources,
 * batches in read order, checkpoints, versions), except that each task's batches go to its Redis
 * stream and the workers' contributions (or dead letters) come back to be folded in batch order.
 */
export async function runCoordinator(config: StreamConfig & { queue: QueueConfig }, options: Omit<StreamJobOptions, 'compute' | 'published'> = {}): Promise<StreamJobResult> {
  const { queue } = config;
  const redis = await openRedis(queue.url, 'stream coordinator', { connectTimeoutS: queue.connectTimeoutS, ...(options.metrics ? { metrics: options.metrics } : {}) });
  try {
    const coordinator = new QueueCoordinator(redis, queue.prefix, queue.url);
    const tasks: JobAnnouncement['tasks'] = {};
    return await runStreamJob(config, {
      ...options,
      status: { queue: { url: queue.url, prefix: queue.prefix } },
      compute: async ({ name, model }) => {
        tasks[name] = { modelFingerprint: await modelFingerprint(model) };
        // Every task is opened before the first batch is cut: announce once all are known.
        if (Object.keys(tasks).length === config.tasks.length) await coordinator.announce({ mode: config.mode, tasks });
        const { numLayers, numHeads, intermediateSize } = model.config;
        return {
          contributions: (stop$) => coordinator.contributions(name, {
            maxPending: queue.maxPending,
            repairAfterMs: queue.claimIdleMs,
            stop$,
            shape: { head: numLayers * numHeads, neuron: numLayers * intermediateSize },
            connectTimeoutS: queue.connectTimeoutS,
            ...(options.metrics ? { metrics: options.metrics } : {}),
          }),
          inFlightBatches: queue.maxPending,
          close: async () => undefined,
        };
      },
      published: (manifest, dir) => coordinator.announceVersion(manifest.version, dir, manifest),
    });
  } finally {
    redis.disconnect();
  }
}

export interface WorkerOptions {
  /** Engine threads per task. */
  threads?: number;
  /** Overrides queue.stop_timeout_s (`--stop-timeout-s`). */
  stopTimeoutS?: number;
  /** Serves /metrics and /healthz (`--metrics-port`). */
  metricsPort?: number;
}

export interface WorkerResult {
  /** Batches served per task. */
  served: Record<string, number>;
  /** The stop timeout ran out with batches in hand (left pending for other workers). */
  abandoned: boolean;
}

/** A task's model opened for serving: its engine, fingerprint and the limits batches are checked against. */
interface OpenedTask {
  fingerprint: string;
  config: EncoderConfig;
  engine: Engine;
}

/**
 * `fisher-merge worker CONFIG`: waits for a coordinator to announce a job under the prefix, then
 * serves every task of the config that the job holds (one loop per task, each with its own engine
 * and Redis connections), following a coordinator restart (a new run) without a restart of its own,
 * until `signal` aborts (SIGTERM). It then finishes the batches in hand for at most the stop
 * timeout, whether or not Redis answers, and abandons the rest (pending, for other workers).
 */
export async function runWorker(config: StreamConfig & { queue: QueueConfig }, signal: AbortSignal, options: WorkerOptions = {}): Promise<WorkerResult> {
  const { queue } = config;
  const stopTimeoutS = options.stopTimeoutS ?? queue.stopTimeoutS;
  const abandon = new AbortController();
  const startStopClock = (): void => void setTimeout(() => abandon.abort(), stopTimeoutS * 1000).unref();
  if (signal.aborted) startStopClock();
  else signal.addEventListener('abort', startStopClock, { once: true });
  return withMetricsServer(options.metricsPort, '--metrics-port', async (metrics) => {
    const redis = await openRedis(queue.url, 'worker', { connectTimeoutS: queue.connectTimeoutS, ...(metrics ? { metrics } : {}) });
    const consumer = `${hostname()}:${process.pid}`;
    const opened = new Map<string, Promise<OpenedTask>>();
    const served: Record<string, number> = {};
    try {
      for (let job = await waitForJob(redis, queue.prefix, queue.url, signal); job; job = await waitForJob(redis, queue.prefix, queue.url, signal)) {
        const tasks = config.tasks.filter((t) => job!.tasks[t.spec.name]);
        if (tasks.length === 0) throw new UserError(`worker: no task of the config is part of the job announced under prefix '${queue.prefix}' (config: ${config.tasks.map((t) => t.spec.name).join(', ')}; job: ${Object.keys(job.tasks).join(', ')})`);
        logEvent('worker.joined', { run: job.run, tasks: tasks.map((t) => t.spec.name), consumer });
        // A task whose model changed makes every loop stop taking entries, and the worker join again.
        const round = new AbortController();
        const stop = AbortSignal.any([signal, round.signal]);
        await Promise.all(tasks.map(async (task) => {
          const name = task.spec.name;
          const announced = job!.tasks[name]!.modelFingerprint;
          // A job that changed a task's model: the config's model folder may have changed too.
          const previous = await opened.get(name);
          if (!previous || previous.fingerprint !== announced) {
            await previous?.engine.dispose();
            opened.set(name, openTask(task, config, options.threads));
          }
          const { fingerprint, config: model, engine } = await opened.get(name)!;
          if (fingerprint !== announced) throw new UserError(`worker: ${task.model}: the model differs from the coordinator's for task '${name}' (fingerprint ${fingerprint.slice(0, 12)} vs ${announced.slice(0, 12)})`);
          const [reader, writer] = [connection(redis), connection(redis)];
          try {
            const { served: n, rejoin } = await serveTask(reader, writer, queue.prefix, name, {
              consumer,
              run: job!.run,
              modelFingerprint: fingerprint,
              claimIdleMs: queue.claimIdleMs,
              maxDeliveries: queue.maxDeliveries,
              prefetch: queue.prefetch,
              signal: stop,
              abandon: abandon.signal,
              limits: model,
              compute: (tokens) => computeContribution(engine, job!.mode, tokens),
              ...(metrics ? { metrics } : {}),
            });
            served[name] = (served[name] ?? 0) + n;
            if (rejoin) round.abort();
          } finally {
            reader.disconnect();
            writer.disconnect();
          }
        }));
        if (signal.aborted) break;
      }
      if (abandon.signal.aborted) logEvent('worker.abandoned', { after_s: stopTimeoutS, why: 'the stop timeout ran out with batches in hand; they stay pending for other workers (queue.stop_timeout_s, --stop-timeout-s)' });
      // An engine may still be computing an abandoned batch: the process exits without waiting for it.
      else for (const task of opened.values()) await (await task).engine.dispose();
      logEvent('worker.stopped', { served, abandoned: abandon.signal.aborted });
      return { served, abandoned: abandon.signal.aborted };
    } finally {
      redis.disconnect();
    }
  });
}

async function openTask(task: StreamTask, config: StreamConfig, threads: number | undefined): Promise<OpenedTask> {
  const name = task.spec.name;
  const { model } = await loadTaskModel(task.model, task.spec, { prefetchFingerprint: true });
  const engine = await openEngine(config.engine, model.weights, { log: (line) => logEvent('worker.engine', { task: name, engine: line }), threads });
  return { fingerprint: await modelFingerprint(model), config: model.config, engine };
}

function connection(redis: Redis): Redis {
  const c = redis.duplicate();
  c.on('error', () => undefined);
  return c;
}
