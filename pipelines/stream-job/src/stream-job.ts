import { promises as fs } from 'node:fs';
import { asyncScheduler, type SchedulerLike } from 'rxjs';
import { acquireLock, refuseOutputOnInputs, UserError } from '@fisher-merge/core';
import type { JobMetrics } from '@fisher-merge/metrics';
import type { StreamConfig } from './config.ts';
import { openGate } from './gate.ts';
import { VersionPublisher, type VersionManifest } from './publish.ts';
import { runJob } from './runtime.ts';
import { CheckpointWriter, outLayout, readStreamState, type TaskStatistics } from './state.ts';
import type { JobStatus } from './status.ts';
import { localCompute, openTask, type LoadedTask, type OpenedTask, type TaskCompute } from './task-pipeline.ts';

export interface StreamJobOptions {
  /**
   * Drain mode: a task's input is finished once its source has had nothing new (no unread file,
   * no new bytes) for this long; the rows of an incomplete last batch then form a smaller batch,
   * as at the end of the one-shot `fisher` command, and the job ends when every task has drained.
   * Without it the job runs until stopped, and a stop leaves an incomplete batch's rows unread.
   */
  exitWhenIdleMs?: number;
  /** Drain mode from the moment this aborts: each input is finished as soon as it has nothing unread. */
  drain?: AbortSignal;
  /** Stops the job (as the stop control file does) when aborted. */
  signal?: AbortSignal;
  /** SIGHUP publishes a version; SIGINT/SIGTERM stop the job (the CLI). */
  handleSignals?: boolean;
  /** How often status.json and the control files are looked at (default 500 ms). */
  statusIntervalMs?: number;
  /** Drives every timer of the job (ticks, publish interval, idle detection); default asyncScheduler, a TestScheduler in tests. */
  scheduler?: SchedulerLike;
  /**
   * Where each task's batches become Fisher contributions: by default its engine in this process;
   * the queue coordinator passes workers reached through Redis.
   */
  compute?: (task: LoadedTask) => Promise<TaskCompute>;
  /**
   * Engine threads of the in-process engines and of the gate's evaluations (default: every core). onnxruntime's sums depend on it
   * in the last bits, so a job equals its queue workers bit for bit when both run the same count.
   */
  threads?: number;
  /** Called with each version once it is published (the coordinator announces it on Redis). */
  published?: (manifest: VersionManifest, dir: string) => Promise<void>;
  /** Extra fields of status.json (the coordinator's queue). */
  status?: Partial<JobStatus>;
  /** Figures for Prometheus (metrics_port): examples and batches folded, versions and publish seconds. */
  metrics?: JobMetrics;
}

export interface StreamJobResult {
  stats: Record<string, TaskStatistics>;
  lastVersion?: number;
  stoppedBy: 'drained' | 'stop';
}

/**
 * `fisher-merge stream`. Per task, one pipeline (task-pipeline.ts): a source of labelled rows (a
 * watched Parquet directory or an Arrow IPC stream) tokenized, cut into batches, turned into Fisher
 * contributions (by its engine, or by queue workers) and folded by one `scan` into the task's state
 * (task-state.ts: statistics and cursor change in one step). The runtime (runtime.ts) subscribes
 * checkpoints, status and publishing to the tasks' updates. Credits (FlowControl) bound what each
 * task holds in memory however large the backlog; the checkpoint records, per source, exactly the
 * rows in the statistics, so a restart after `kill -9` re-reads exactly the rows not yet counted.
 */
export async function runStreamJob(config: StreamConfig, options: StreamJobOptions = {}): Promise<StreamJobResult> {
  const layout = outLayout(config.out);
  refuseOutputOnInputs({ what: 'out', path: config.out }, config.tasks.flatMap((t, i) => [
    { what: `tasks[${i}].model`, path: t.model },
    ...(t.input.kind === 'watch' ? [{ what: `tasks[${i}].watch`, path: t.input.dir }] : t.input.path === '-' ? [] : [{ what: `tasks[${i}].ipc`, path: t.input.path }]),
  ]));
  await fs.mkdir(config.out, { recursive: true });
  // One job per output: a second would count the same files. A dead holder's lock is stale, never a block.
  const lock = await acquireLock(layout.lock, `stream output ${config.out}`);
  const opened: OpenedTask[] = [];
  try {
    // A stop file left by a run that died before acting on it must not stop this one at once.
    await fs.rm(layout.stopFile, { force: true });
    const saved = await readStreamState(layout.checkpoint);
    for (const name of Object.keys(saved?.tasks ?? {})) {
      if (!config.tasks.some((t) => t.spec.name === name)) throw new UserError(`${layout.checkpoint}: the checkpoint holds task '${name}', which the config no longer lists; use a new 'out' directory`);
    }
    const compute = options.compute ?? ((task: LoadedTask) => localCompute(task, options.threads));
    for (const task of config.tasks) opened.push(await openTask(task, config, saved, layout.checkpoint, compute));
    const publisher = await VersionPublisher.open(config.out, await openGate(config, options.threads));
    const checkpoints = await CheckpointWriter.open(config.out, saved);
    // The accepted version is the one `latest` names: it may be ahead of the checkpoint (a crash between
    // publishing and checkpointing), and the checkpoint's mark may be a rejected candidate's.
    const last = { version: publisher.latest, ...(publisher.lastRejected !== undefined ? { rejected: publisher.lastRejected } : {}), mark: saved?.published, folded: {} };
    const end = await runJob(config, opened, publisher, last, {
      scheduler: options.scheduler ?? asyncScheduler,
      statusIntervalMs: options.statusIntervalMs ?? 500,
      handleSignals: options.handleSignals ?? false,
      idle: {
        ...(options.exitWhenIdleMs !== undefined ? { idleMs: options.exitWhenIdleMs } : {}),
        ...(options.drain ? { drain: options.drain } : {}),
      },
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.published ? { published: options.published } : {}),
      ...(options.status ? { status: options.status } : {}),
      ...(options.metrics ? { metrics: options.metrics } : {}),
      checkpoints,
    });
    return {
      stats: Object.fromEntries(Object.values(end.job).map((p) => [p.task, p.state.stats])),
      ...(end.last.version !== undefined ? { lastVersion: end.last.version } : {}),
      stoppedBy: end.stoppedBy,
    };
  } finally {
    await Promise.all(opened.map((t) => t.compute.close()));
    await lock.release();
  }
}
