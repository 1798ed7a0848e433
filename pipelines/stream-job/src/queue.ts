import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { concatMap, defer, EMPTY, finalize, from, groupBy, lastValueFrom, mergeMap, switchMap } from 'rxjs';
import { logEvent, UserError } from '@fisher-merge/core';
import { openEngine } from '@fisher-merge/engines';
import { computeContribution } from '@fisher-merge/fisher';
import { withMetricsServer } from '@fisher-merge/metrics';
import { modelFingerprint, type Engine, type EncoderConfig } from '@fisher-merge/model';
import { jobAnnouncements, openRedis, QueueCoordinator, serveTask, waitForJob, type JobAnnouncement } from '@fisher-merge/queue';
import { loadTaskModel } from '@fisher-merge/task-model';
import type { QueueConfig, StreamConfig, StreamTask } from './config.ts';
import { runStreamJob, type StreamJobOptions, type StreamJobResult } from './stream-job.ts';
import { configTasks, readTaskDirectory, taskChanges, type TaskEntry } from './task-dir.ts';

/**
 * `fisher-merge stream CONFIG` with `queue:` — the coordinator. The stream job as always (sources,
 * batches in read order, checkpoints, versions), except that each task's batches go to its Redis
 * stream and the workers' contributions (or dead letters) come back to be folded in batch order.
 */
export async function runCoordinator(config: StreamConfig & { queue: QueueConfig }, options: Omit<StreamJobOptions, 'compute' | 'published'> = {}): Promise<StreamJobResult> {
  const { queue } = config;
  const redis = await openRedis(queue.url, 'stream coordinator', { connectTimeoutS: queue.connectTimeoutS, ...(options.metrics ? { metrics: options.metrics } : {}) });
  try {
    const coordinator = new QueueCoordinator(redis, queue.prefix, queue.url, config.mode);
    return await runStreamJob(config, {
      ...options,
      status: { queue: { url: queue.url, prefix: queue.prefix } },
      // Each run of a task joins the announced job under a run of its own, and leaves it when it ends.
      compute: async ({ name, model }) => {
        const run = await coordinator.join(name, await modelFingerprint(model));
        const { numLayers, numHeads, intermediateSize } = model.config;
        return {
          contributions: (stop$) => coordinator.contributions(name, run, {
            maxPending: queue.maxPending,
            repairAfterMs: queue.claimIdleMs,
            stop$,
            shape: { head: numLayers * numHeads, neuron: numLayers * intermediateSize },
            connectTimeoutS: queue.connectTimeoutS,
            ...(options.metrics ? { metrics: options.metrics } : {}),
          }),
          inFlightBatches: queue.maxPending,
          close: () => coordinator.leave(name, run),
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

/** A task of the announced job this worker can serve: its entry (the config's, or its file's), and the run and model the job announced for it. */
interface ServedTask extends TaskEntry {
  announced: JobAnnouncement['tasks'][string];
  mode: JobAnnouncement['mode'];
}

/**
 * `fisher-merge worker CONFIG`: waits for a coordinator to announce a job under the prefix, then
 * follows the announced job: each task of it that the config lists (under `tasks:`, or as a file of
 * its tasks_dir) is served by one loop with its own engine and Redis connections, from the moment
 * the job names it until the job no longer does, or names another model for it (then it is opened
 * again); a new run of a task with the same model (a coordinator restart) is followed in place. All
 * without a restart of the worker, until `signal` aborts (SIGTERM). It then finishes the batches in
 * hand for at most the stop timeout, whether or not Redis answers, and abandons the rest (pending,
 * for other workers).
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
    const fixed = configTasks(config.tasks);
    /** The job's tasks this worker can serve; a task file is read when the job names its task. */
    const servable = async (job: JobAnnouncement): Promise<ReadonlyMap<string, ServedTask>> => {
      const known = config.tasksDir ? new Map([...fixed, ...(await readTaskDirectory(config.tasksDir, new Set(fixed.keys())))]) : fixed;
      const tasks = new Map(Object.entries(job.tasks).flatMap(([name, announced]) => {
        const entry = known.get(name);
        // Opened again when the job names another model; a new run of the same one is followed in place.
        return entry ? [[name, { ...entry, revision: announced.modelFingerprint, announced, mode: job.mode }] as const] : [];
      }));
      if (tasks.size === 0 && Object.keys(job.tasks).length > 0) logEvent('worker.no_task', { why: `no task of the job announced under prefix '${queue.prefix}' is in this worker's config`, config: [...known.keys()], job: Object.keys(job.tasks) });
      return tasks;
    };
    /** One task, served until `left` (the job changed for it) or `signal` (SIGTERM) aborts, or the job names another model for it. */
    const serve = async ({ task, file, announced, mode }: ServedTask, left: AbortSignal): Promise<void> => {
      const name = task.spec.name;
      // A job that changed a task's model: the model folder may have changed too.
      const previous = await opened.get(name);
      if (!previous || previous.fingerprint !== announced.modelFingerprint) {
        await previous?.engine.dispose();
        opened.set(name, openTask(task, config, options.threads));
      }
      const { fingerprint, config: model, engine } = await opened.get(name)!;
      if (fingerprint !== announced.modelFingerprint) {
        const differs = `${task.model}: the model differs from the coordinator's for task '${name}' (fingerprint ${fingerprint.slice(0, 12)} vs ${announced.modelFingerprint.slice(0, 12)})`;
        // A task file may be rewritten after the job announced it: the next announcement settles it.
        if (file === undefined) throw new UserError(`worker: ${differs}`);
        logEvent('worker.task_skipped', { task: name, file, why: differs, until: 'the job is announced again' });
        return;
      }
      logEvent('worker.joined', { run: announced.run, task: name, consumer });
      const [reader, writer] = [connection(redis), connection(redis)];
      try {
        const { served: n } = await serveTask(reader, writer, queue.prefix, name, {
          consumer,
          run: announced.run,
          modelFingerprint: fingerprint,
          claimIdleMs: queue.claimIdleMs,
          maxDeliveries: queue.maxDeliveries,
          prefetch: queue.prefetch,
          signal: AbortSignal.any([signal, left]),
          abandon: abandon.signal,
          limits: model,
          compute: (tokens) => computeContribution(engine, mode, tokens),
          ...(metrics ? { metrics } : {}),
        });
        served[name] = (served[name] ?? 0) + n;
        if (left.aborted && !signal.aborted) logEvent('worker.left', { task: name, run: announced.run, served: n });
      } finally {
        reader.disconnect();
        writer.disconnect();
      }
    };
    // Per task, one loop at a time: a change of the job for it stops the one running (it finishes what it holds).
    const serving$ = jobAnnouncements(redis, queue.prefix, signal).pipe(
      concatMap(servable),
      taskChanges,
      groupBy((change) => change.name),
      mergeMap((changes) => changes.pipe(switchMap(({ entry }) => (entry ? defer(() => {
        const left = new AbortController();
        return from(serve(entry, left.signal)).pipe(finalize(() => left.abort()));
      }) : EMPTY)))),
    );
    try {
      if (await waitForJob(redis, queue.prefix, queue.url, signal)) await lastValueFrom(serving$, { defaultValue: undefined });
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
