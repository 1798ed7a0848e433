import { promises as fs } from 'node:fs';
import { asyncScheduler, map, of, type SchedulerLike } from 'rxjs';
import { acquireLock, isUserError, logEvent, type NamedPath, refuseOutputOnInputs, UserError } from '@fisher-merge/core';
import type { JobMetrics } from '@fisher-merge/metrics';
import type { StreamConfig, StreamTask } from './config.ts';
import { openGate } from './gate.ts';
import { VersionPublisher, type VersionManifest } from './publish.ts';
import { runJob, type JobTasks } from './runtime.ts';
import { CheckpointWriter, outLayout, readStreamState, type TaskStatistics } from './state.ts';
import { configTasks, taskDirectory } from './task-dir.ts';
import type { JobStatus } from './status.ts';
import { checkSettings, localCompute, openTask, savedProgress, type LoadedTask, type OpenedTask, type TaskCompute } from './task-pipeline.ts';

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
  refuseOutputOnInputs({ what: 'out', path: config.out }, [
    ...config.tasks.flatMap((t, i) => taskInputs(t, `tasks[${i}].`)),
    ...(config.tasksDir ? [{ what: 'tasks_dir', path: config.tasksDir.dir }] : []),
  ]);
  await fs.mkdir(config.out, { recursive: true });
  // One job per output: a second would count the same files. A dead holder's lock is stale, never a block.
  const lock = await acquireLock(layout.lock, `stream output ${config.out}`);
  // Every task opened in this run (a task that joins twice, twice): each is closed once it ends, and all by the end.
  const opened: OpenedTask[] = [];
  try {
    // A stop file left by a run that died before acting on it must not stop this one at once.
    await fs.rm(layout.stopFile, { force: true });
    const saved = await readStreamState(layout.checkpoint);
    // With a tasks_dir, a task the checkpoint holds may have left (its file gone) and may return.
    if (!config.tasksDir) {
      for (const name of Object.keys(saved?.tasks ?? {})) {
        if (!config.tasks.some((t) => t.spec.name === name)) throw new UserError(`${layout.checkpoint}: the checkpoint holds task '${name}', which the config no longer lists; use a new 'out' directory`);
      }
    }
    // Settings are job-wide: checked for every saved task before any model loads, the config's tasks first.
    const savedNames = Object.keys(saved?.tasks ?? {});
    for (const name of new Set([...config.tasks.map((t) => t.spec.name).filter((n) => savedNames.includes(n)), ...savedNames])) checkSettings(layout.checkpoint, name, saved!.tasks[name]!.stats, config);
    const compute = options.compute ?? ((task: LoadedTask) => localCompute(task, options.threads));
    const scheduler = options.scheduler ?? asyncScheduler;
    const idle = {
      ...(options.exitWhenIdleMs !== undefined ? { idleMs: options.exitWhenIdleMs } : {}),
      ...(options.drain ? { drain: options.drain } : {}),
    };
    const fixed = configTasks(config.tasks);
    const tasks: JobTasks = {
      present$: config.tasksDir
        ? taskDirectory(config.tasksDir, { scheduler, reserved: new Set(fixed.keys()), idle }).pipe(map((files) => new Map([...fixed, ...files])))
        : of(fixed),
      required: [...fixed.keys()],
      saved: Object.fromEntries(Object.keys(saved?.tasks ?? {}).map((name) => [name, savedProgress(name, saved!)])),
      open: async ({ task, file }, from) => {
        try {
          // A task file is checked when it joins; the config's tasks were checked above.
          if (file !== undefined) refuseOutputOnInputs({ what: 'out', path: config.out }, taskInputs(task, `${file}: `));
          const t = await openTask(task, config, from, { checkpointFile: layout.checkpoint, modelChange: file === undefined ? 'refuse' : 'restart' }, compute);
          opened.push(t);
          logEvent('stream.task_joined', { task: t.name, ...(file !== undefined ? { file } : {}), examples: t.initial.state.stats.examples, files_consumed: t.initial.state.cursor.consumed.size, resume: t.initial.state.cursor.current ?? null });
          return t;
        } catch (e) {
          // A task file that cannot run is said once; the job goes on without it until the file changes.
          if (file === undefined || !isUserError(e)) throw e;
          logEvent('stream.task_file_refused', { file, error: e.message, until: 'the file changes' });
          return undefined;
        }
      },
    };
    const publisher = await VersionPublisher.open(config.out, await openGate(config, options.threads));
    const checkpoints = await CheckpointWriter.open(config.out, saved);
    // The accepted version is the one `latest` names: it may be ahead of the checkpoint (a crash between
    // publishing and checkpointing), and the checkpoint's mark may be a rejected candidate's.
    const last = { version: publisher.latest, ...(publisher.lastRejected !== undefined ? { rejected: publisher.lastRejected } : {}), mark: saved?.published, folded: {} };
    const end = await runJob(config, tasks, publisher, last, {
      scheduler,
      statusIntervalMs: options.statusIntervalMs ?? 500,
      handleSignals: options.handleSignals ?? false,
      idle,
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

/** A task's model and source, named (after `where`) for the message that refuses an output on them. */
function taskInputs(t: StreamTask, where: string): NamedPath[] {
  return [
    { what: `${where}model`, path: t.model },
    ...(t.input.kind === 'watch' ? [{ what: `${where}watch`, path: t.input.dir }] : t.input.path === '-' ? [] : [{ what: `${where}ipc`, path: t.input.path }]),
  ];
}
