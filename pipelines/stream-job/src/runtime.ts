import path from 'node:path';
import {
  bufferCount,
  catchError,
  combineLatest,
  concat,
  concatMap,
  connect,
  defer,
  distinctUntilChanged,
  EMPTY,
  endWith,
  exhaustMap,
  filter,
  finalize,
  from,
  groupBy,
  fromEvent,
  ignoreElements,
  interval,
  last,
  lastValueFrom,
  map,
  merge,
  mergeMap,
  type Observable,
  of,
  ReplaySubject,
  type SchedulerLike,
  scan,
  share,
  shareReplay,
  startWith,
  switchScan,
  take,
  takeUntil,
  tap,
  throwError,
} from 'rxjs';
import { logEvent, UserError, writeFileAtomic } from '@fisher-merge/core';
import { schedulerClock } from '@fisher-merge/data';
import type { JobMetrics } from '@fisher-merge/metrics';
import type { StreamConfig } from './config.ts';
import { exhaustMapWithTrailing, exhaustScanWithTrailing, takeControlFile } from './operators.ts';
import type { VersionManifest, VersionPublisher } from './publish.ts';
import { isGramStats, outLayout, publishedMark, statisticName, type CheckpointWriter, type PublishedMark, type TaskStatistics } from './state.ts';
import { ratePerSecond, sampleRate, type JobStatus, type RateSample } from './status.ts';
import { taskChanges, type TaskEntry, type TaskSet } from './task-dir.ts';
import { taskPipeline, type OpenedTask, type TaskPipeline } from './task-pipeline.ts';
import type { TaskProgress } from './task-state.ts';

export interface RuntimeOptions {
  /** Drives every timer of the job: status ticks, control files, the publish interval, idle detection. */
  scheduler: SchedulerLike;
  /** How often status.json and the control files are looked at. */
  statusIntervalMs: number;
  /** SIGHUP publishes a version; SIGINT/SIGTERM stop the job. */
  handleSignals: boolean;
  /** Stops the job when aborted. */
  signal?: AbortSignal;
  /** Drain mode (see StreamJobOptions). */
  idle: { idleMs?: number; drain?: AbortSignal };
  /** Called with each version once it is published. */
  published?: (manifest: VersionManifest, dir: string) => Promise<void>;
  /** Extra fields of status.json. */
  status?: Partial<JobStatus>;
  /** Figures for Prometheus: examples and batches folded, versions and publish seconds. */
  metrics?: JobMetrics;
  /** Writes checkpoint.json and the Gram files beside it. */
  checkpoints: CheckpointWriter;
}

/** Every task's latest fold state, by name: those running, those that left and those the checkpoint holds that have not joined. */
export type JobProgress = Record<string, TaskProgress>;

/** The pipelines of the tasks running now, by name. */
export type RunningTasks = Readonly<Record<string, TaskPipeline>>;

/** The tasks' states after an update (none before the first). */
interface JobUpdate {
  job: JobProgress;
  running: RunningTasks;
  update?: TaskProgress;
}

/** What a task's run emits: its fold state, and its pipeline while it runs (none once it left). */
interface TaskUpdate {
  progress: TaskProgress;
  pipeline?: TaskPipeline;
}

/** The job's tasks: which are present as time goes on, and how one is opened. */
export interface JobTasks {
  /** The tasks present, each time the set changes; completes once no task can join any more. */
  present$: Observable<TaskSet>;
  /** Tasks every one of which needs examples before the first version (the config's `tasks:`). */
  required: readonly string[];
  /** Each task's progress as the checkpoint left it, not running until it joins. */
  saved: JobProgress;
  /** Opens one run of a task from its last state; undefined when the task was refused (and said so). */
  open: (entry: TaskEntry, from: TaskProgress | undefined) => Promise<OpenedTask | undefined>;
}

/**
 * The last version `latest` names, the last candidate a gate rejected, and of the last candidate
 * built (accepted or rejected, the publish policies' baseline) its statistics and each task's `folded` count then.
 */
export interface LastVersion {
  version: number | undefined;
  rejected?: number;
  mark: PublishedMark | undefined;
  folded: Record<string, number>;
}

/** Why a version might be built now: a task's update (if a policy fires for it; all tasks when absent), the interval, an operator, the end of the job. */
export type PublishRequest = { kind: 'policy'; task?: string } | { kind: 'interval' } | { kind: 'trigger' } | { kind: 'stop' };

export interface JobEnd {
  job: JobProgress;
  last: LastVersion;
  stoppedBy: 'drained' | 'stop';
}

/** The last candidate built, as a log line names it: a version, or a candidate the gate rejected. */
const lastBuilt = (last: LastVersion): string => (last.rejected !== undefined && last.mark?.version === last.rejected ? `rejected candidate ${last.rejected}` : `version ${last.version ?? 'none'}`);

/** Examples a task folded since `last` was built. */
export const examplesSince = (p: TaskProgress, last: LastVersion): number => p.folded - (last.folded[p.task] ?? 0);

/**
 * The stream job's runtime: runs a pipeline per present task and subscribes checkpoints, status
 * and publishing to their update stream. Each change of a task (a new revision of its file, or its
 * file gone) ends its current run, and a new revision starts the next one from the state the last
 * run left (`switchScan` per task name): a task that left keeps its statistics in the job's state
 * and checkpoints, and resumes from them when it returns. Publishing runs one version at a time
 * (requests meanwhile collapse into one more, the broadest kept) from the tasks running now;
 * checkpoints are written every `checkpoint_every` batches, after a skipped file and after a
 * version; status on every tick. A stop (signal, stop file, abort) ends the batch streams and the
 * task set, and everything here completes behind them; then the last checkpoint, the version
 * `on_stop` asks for, and a last status are written.
 */
export async function runJob(config: StreamConfig, tasks: JobTasks, publisher: VersionPublisher, start: LastVersion, options: RuntimeOptions): Promise<JobEnd> {
  const layout = outLayout(config.out);
  const { scheduler } = options;
  const ticks$ = interval(options.statusIntervalMs, scheduler).pipe(share());
  const controlFile = (file: string): Observable<unknown> => ticks$.pipe(exhaustMap(() => takeControlFile(file)), filter(Boolean));
  const signals = (...names: NodeJS.Signals[]): Observable<unknown> => (options.handleSignals ? merge(...names.map((n) => fromEvent(process, n))) : EMPTY);
  let stoppedBy: JobEnd['stoppedBy'] = 'drained';
  const stop$ = merge(
    options.signal ? (options.signal.aborted ? of('signal') : fromEvent(options.signal, 'abort').pipe(map(() => 'signal'))) : EMPTY,
    controlFile(layout.stopFile).pipe(map(() => 'stop file')),
    signals('SIGINT', 'SIGTERM').pipe(map(() => 'signal')),
  ).pipe(
    take(1),
    tap((reason) => {
      stoppedBy = 'stop';
      logEvent('stream.stopping', { reason });
    }),
    share({ connector: () => new ReplaySubject(1) }),
  );
  const context = { config, stop$, clock: schedulerClock(scheduler), idle: options.idle, quarantineDir: layout.quarantine };
  /**
   * One run of a task. While its model loads, its last state stands (`joining`: versions wait for
   * it); a task refused, or whose file left, is marked as left, its state kept.
   */
  const run = (name: string, entry: TaskEntry | undefined, last: TaskProgress | undefined): Observable<TaskUpdate> => {
    const mark = (kind: 'joining' | 'left'): Observable<TaskUpdate> => (last ? of({ progress: { ...last, buffered: 0, event: { kind } } }) : EMPTY);
    if (!entry) {
      return defer(() => {
        logEvent('stream.task_left', { task: name, examples: last?.state.stats.examples ?? 0, kept: 'its statistics stay in the state and resume if it returns' });
        return mark('left');
      });
    }
    return concat(mark('joining'), defer(() => {
      const opening = tasks.open(entry, last);
      return from(opening).pipe(
        mergeMap((opened) => {
          if (!opened) return mark('left');
          const pipeline = taskPipeline(opened, context);
          return pipeline.progress$.pipe(startWith(opened.initial), map((progress): TaskUpdate => ({ progress, pipeline })));
        }),
        // However the run ends, even while the model still loads, the task is closed once opened.
        // The job awaits the same close at its end (and sees its error there).
        finalize(() => void opening.then((opened) => opened?.compute.close()).catch(() => undefined)),
      );
    }));
  };
  const updates$ = taskChanges(tasks.present$.pipe(takeUntil(stop$))).pipe(
    groupBy((change) => change.name),
    mergeMap((changes) => changes.pipe(switchScan((last: TaskUpdate | undefined, { entry }) => run(changes.key, entry, last?.progress ?? tasks.saved[changes.key]), undefined))),
  );
  const initial: JobUpdate = { job: tasks.saved, running: {} };
  const publish = publishing(config, tasks.required, publisher, options);
  const writeCheckpoint = (job: JobProgress, lastVersion: LastVersion) =>
    options.checkpoints.write({ tasks: Object.fromEntries(Object.entries(job).map(([name, p]) => [name, p.state])), ...(lastVersion.mark ? { published: markOf(lastVersion.mark, job) } : {}) });
  const startedAt = new Date(scheduler.now()).toISOString();
  const writeStatus = (status: JobStatus) => writeFileAtomic(layout.status, `${JSON.stringify(status, null, 2)}\n`).catch((e: unknown) => logEvent('stream.status_failed', { error: (e as Error).message }));
  const statusOf = (running: boolean, job: JobUpdate, lastVersion: LastVersion, rates: Record<string, RateSample[]>) => jobStatus({ running, started: startedAt, now: scheduler.now(), job, last: lastVersion, rates, extra: options.status });

  const running$ = updates$.pipe(
    connect((updates) => {
      const end$ = updates.pipe(ignoreElements(), endWith(true));
      // Everything below reads the tasks' states from here: a subscriber of job$ that reads
      // latest$ sees the update it was called for (a replayed buffer is updated before it emits).
      const job$ = updates.pipe(
        scan((s: JobUpdate, { progress, pipeline }): JobUpdate => {
          const { [progress.task]: was, ...others } = s.running;
          const running = was === pipeline ? s.running : pipeline ? { ...others, [progress.task]: pipeline } : others;
          return { job: { ...s.job, [progress.task]: progress }, running, update: progress };
        }, initial),
        startWith(initial),
        shareReplay(1),
      );
      const update$ = job$.pipe(map((s) => s.update), filter((u): u is TaskProgress => u !== undefined));
      const versions$ = publishRequests(update$, end$, {
        intervalMs: config.publish.intervalS === undefined ? undefined : config.publish.intervalS * 1000,
        trigger$: merge(controlFile(layout.publishFile), signals('SIGHUP')),
        scheduler,
      }).pipe(
        exhaustScanWithTrailing((state: Publishing, request: PublishRequest) => job$.pipe(take(1), concatMap((job) => publish(state, request, job))), { last: start, deferredLogged: false }, strongerRequest),
        map((p) => p.last),
        // A deferral changes the publishing state, not the last version.
        distinctUntilChanged(),
        share(),
      );
      const lastVersion$ = versions$.pipe(startWith(start), shareReplay(1));
      const state$ = combineLatest([job$, lastVersion$]);
      const latest$ = state$.pipe(take(1));
      const checkpoints$ = merge(
        update$.pipe(filter((p) => p.event.kind === 'folded' || p.event.kind === 'dead'), bufferCount(config.checkpointEvery)),
        update$.pipe(filter((p) => p.event.kind === 'skipped')),
        versions$,
      ).pipe(exhaustMapWithTrailing(() => latest$.pipe(concatMap(([{ job }, lastVersion]) => writeCheckpoint(job, lastVersion)))));
      const metrics$ = update$.pipe(
        tap(({ task, state: { stats } }) => {
          options.metrics?.examples.set({ task }, stats.examples);
          options.metrics?.batchesFolded.set({ task }, stats.batches);
        }),
      );
      const status$ = ticks$.pipe(
        takeUntil(end$),
        concatMap(() => latest$),
        scan((s, [job, lastVersion]) => statusTick(s, job, lastVersion, scheduler.now(), config.logIntervalS * 1000), { rates: {}, loggedAt: scheduler.now() } as StatusTick),
        exhaustMap((s) => writeStatus(statusOf(true, s.job!, s.last!, s.rates))),
      );
      return merge(
        merge(checkpoints$, status$, metrics$).pipe(ignoreElements()),
        state$.pipe(last()),
      );
    }),
  );

  for (const p of Object.values(tasks.saved)) options.metrics?.examples.set({ task: p.task }, p.state.stats.examples);
  const names = [...new Set([...tasks.required, ...Object.keys(tasks.saved)])];
  logEvent('stream.started', {
    out: config.out,
    tasks: names.map((task) => {
      const state = tasks.saved[task]?.state;
      return { task, examples: state?.stats.examples ?? 0, files_consumed: state?.cursor.consumed.size ?? 0, resume: state?.cursor.current ?? null };
    }),
    ...(config.tasksDir ? { tasks_dir: config.tasksDir.dir } : {}),
    last_version: start.version ?? null,
  });
  let job = initial;
  let lastVersion = start;
  try {
    [job, lastVersion] = await lastValueFrom(running$);
    await writeCheckpoint(job.job, lastVersion);
    if (config.publish.onStop) {
      const stopped = await lastValueFrom(publish({ last: lastVersion, deferredLogged: false }, { kind: 'stop' }, job), { defaultValue: undefined });
      if (stopped && stopped.last !== lastVersion) {
        lastVersion = stopped.last;
        await writeCheckpoint(job.job, lastVersion);
      }
    }
  } finally {
    await writeStatus(statusOf(false, job, lastVersion, {}));
  }
  logEvent('stream.stopped', { by: stoppedBy, last_version: lastVersion.version ?? null, examples: Object.fromEntries(Object.values(job.job).map((p) => [p.task, p.state.stats.examples])) });
  return { job: job.job, last: lastVersion, stoppedBy };
}

/** The last version's statistics of the tasks whose statistics still have their shape (a restarted task's new model may not). */
function markOf(mark: PublishedMark, job: JobProgress): PublishedMark {
  const sameShape = ([name, m]: [string, PublishedMark['tasks'][string]]): boolean => {
    const stats = job[name]?.state.stats;
    if (stats === undefined) return false;
    // Gram marks hold a count only.
    return isGramStats(stats) || (stats.head.length === m.head?.length && stats.neuron.length === m.neuron?.length);
  };
  return { version: mark.version, tasks: Object.fromEntries(Object.entries(mark.tasks).filter(sameShape)) };
}

/**
 * The publish requests of a job, until `end$`: one per folded batch (a policy may fire) and per task
 * that left (the next version is built without it), one per `intervalMs` on `scheduler`, one per
 * operator trigger.
 */
export function publishRequests(updates: Observable<TaskProgress>, end$: Observable<unknown>, options: { intervalMs: number | undefined; trigger$: Observable<unknown>; scheduler: SchedulerLike }): Observable<PublishRequest> {
  return merge(
    updates.pipe(filter((p) => p.event.kind === 'folded' || p.event.kind === 'left'), map((p): PublishRequest => ({ kind: 'policy', task: p.task }))),
    options.intervalMs === undefined ? EMPTY : interval(options.intervalMs, options.scheduler).pipe(map((): PublishRequest => ({ kind: 'interval' }))),
    options.trigger$.pipe(map((): PublishRequest => ({ kind: 'trigger' }))),
  ).pipe(takeUntil(end$));
}

const REQUEST_RANK = { policy: 0, interval: 1, trigger: 2, stop: 3 } as const;

/** Of two requests waiting for a merge to end, the one that publishes in more cases (policies of two tasks: of all). */
export function strongerRequest(waiting: PublishRequest, arriving: PublishRequest): PublishRequest {
  if (waiting.kind === 'policy' && arriving.kind === 'policy') return waiting.task === arriving.task ? arriving : { kind: 'policy' };
  return REQUEST_RANK[arriving.kind] >= REQUEST_RANK[waiting.kind] ? arriving : waiting;
}

interface Publishing {
  last: LastVersion;
  deferredLogged: boolean;
}

/**
 * The publishing step: given the last version, a request and the tasks' states, builds a version
 * if one is due, from the running tasks that have examples. Versions wait for a task whose model is
 * loading; the first also until every running and every required task has examples; later, a task
 * without any (just joined, or restarted) enters the first version after it has some. One is due when a task has new examples and a
 * policy (or the request) says so, or when the tasks to merge are no longer the last version's.
 */
function publishing(config: StreamConfig, required: readonly string[], publisher: VersionPublisher, options: RuntimeOptions) {
  const policyReason = (p: TaskProgress, lastVersion: LastVersion): string | undefined => {
    const policy = config.publish;
    if (policy.everyExamples !== undefined && examplesSince(p, lastVersion) >= policy.everyExamples) return 'every_examples';
    if (policy.relativeChange !== undefined && relativeChange(p.state.stats, lastVersion.mark?.tasks[p.task]) > policy.relativeChange) return 'relative_change';
    return undefined;
  };
  const build = async (reason: string, tasks: { opened: OpenedTask; progress: TaskProgress }[], last: LastVersion): Promise<LastVersion> => {
    const started = options.scheduler.now();
    logEvent('stream.publishing', { reason, tasks: tasks.map((t) => t.opened.name) });
    const outcome = await publisher.publish({
      reason,
      merge: config.merge,
      tasks: tasks.map(({ opened: { name, task }, progress: { state } }) => ({ name, spec: task.spec, model: task.model, lambda: task.lambda, stats: state.stats, cursor: state.cursor, skippedRows: state.skippedRows, ...(task.validation ? { validation: task.validation } : {}) })),
    });
    const { manifest } = outcome;
    const seconds = (options.scheduler.now() - started) / 1000;
    options.metrics?.publishSeconds.observe(seconds);
    // A rejected candidate is an attempt all the same: the policies count from it, so the job does not merge again on every batch.
    const attempt = {
      mark: { version: manifest.version, tasks: Object.fromEntries(tasks.map(({ opened, progress: { state } }) => [opened.name, publishedMark(state.stats)])) },
      folded: Object.fromEntries(tasks.map(({ opened, progress }) => [opened.name, progress.folded])),
    };
    if (!outcome.accepted) {
      logEvent('stream.version_rejected', { version: manifest.version, reason, seconds: Number(seconds.toFixed(3)), latest: outcome.rejection.latest, failures: outcome.rejection.failures });
      return { ...attempt, version: last.version, rejected: manifest.version };
    }
    options.metrics?.versions.inc();
    await options.published?.(manifest, path.join(outLayout(config.out).versions, String(manifest.version)));
    logEvent('stream.published', { version: manifest.version, reason, seconds: Number(seconds.toFixed(3)), examples: Object.fromEntries(tasks.map((t) => [t.opened.name, t.progress.state.stats.examples])) });
    return { ...attempt, version: manifest.version, ...(last.rejected !== undefined ? { rejected: last.rejected } : {}) };
  };
  return (state: Publishing, request: PublishRequest, { job, running }: JobUpdate): Observable<Publishing> => {
    const present = Object.values(running).map(({ opened }) => ({ opened, progress: job[opened.name]! }));
    const merged = present.filter(({ progress }) => progress.state.stats.examples > 0);
    const before = state.last.mark && Object.keys(state.last.mark.tasks);
    const tasksChanged = before !== undefined && (before.length !== merged.length || merged.some(({ opened }) => !before.includes(opened.name)));
    if (!tasksChanged && !present.some(({ progress }) => examplesSince(progress, state.last) > 0)) {
      // An operator who asked for a version should hear why none came.
      if (request.kind === 'trigger') logEvent('stream.publish_skipped', { reason: 'trigger', why: `no new examples since ${lastBuilt(state.last)}` });
      return EMPTY;
    }
    const policy = request.kind === 'policy' ? present.filter(({ progress }) => request.task === undefined || progress.task === request.task).map(({ progress }) => policyReason(progress, state.last)).find((r) => r !== undefined) : request.kind;
    const reason = policy ?? (tasksChanged ? 'tasks_changed' : undefined);
    if (reason === undefined) return EMPTY;
    const waiting = [
      ...required.filter((name) => !running[name] && job[name]?.event.kind !== 'joining'),
      ...Object.values(job).filter((p) => p.event.kind === 'joining').map((p) => p.task),
      // The first version merges every task.
      ...(state.last.version === undefined ? present.filter(({ progress }) => progress.state.stats.examples === 0).map(({ opened }) => opened.name) : []),
    ];
    if (waiting.length > 0) {
      if (!state.deferredLogged) logEvent('stream.publish_deferred', { reason, waiting_for: waiting });
      return of({ ...state, deferredLogged: true });
    }
    if (merged.length === 0) return EMPTY;
    return from(build(reason, merged, state.last)).pipe(
      map((lastVersion) => ({ ...state, last: lastVersion })),
      // A candidate the merge refuses (a non-finite tensor, say) is never published: nothing lands in
      // versions/, latest stays, and the job goes on folding; the next request tries again.
      catchError((e: unknown) => {
        if (!(e instanceof UserError)) return throwError(() => e);
        logEvent('stream.version_failed', { reason, error: e.message, latest: state.last.version ?? null });
        return EMPTY;
      }),
    );
  };
}

interface StatusTick {
  rates: Record<string, RateSample[]>;
  loggedAt: number;
  job?: JobUpdate;
  last?: LastVersion;
}

/** One status tick: samples every task's rate, and logs the running tasks' progress once every `logEveryMs`. */
function statusTick(s: StatusTick, job: JobUpdate, lastVersion: LastVersion, now: number, logEveryMs: number): StatusTick {
  const rates = Object.fromEntries(Object.values(job.job).map((p) => [p.task, sampleRate(s.rates[p.task] ?? [], now, p.folded)]));
  const log = now - s.loggedAt >= logEveryMs;
  if (log) {
    for (const { opened, backlog } of Object.values(job.running)) {
      const p = job.job[opened.name]!;
      logEvent('stream.progress', { task: p.task, examples: p.state.stats.examples, examples_per_s: Number(ratePerSecond(rates[p.task]!).toFixed(2)), backlog_files: backlog(), last_version: lastVersion.version ?? null });
    }
  }
  return { rates, loggedAt: log ? now : s.loggedAt, job, last: lastVersion };
}

function jobStatus(s: { running: boolean; started: string; now: number; job: JobUpdate; last: LastVersion; rates: Record<string, RateSample[]>; extra: Partial<JobStatus> | undefined }): JobStatus {
  return {
    pid: process.pid,
    running: s.running,
    started: s.started,
    updated: new Date(s.now).toISOString(),
    last_version: s.last.version ?? null,
    last_rejected: s.last.rejected ?? null,
    memory: memoryMB(),
    ...s.extra,
    tasks: Object.fromEntries(Object.values(s.job.job).map((p) => {
      const pipeline = s.job.running[p.task];
      return [p.task, {
        present: pipeline !== undefined,
        statistic: statisticName(p.state.stats),
        examples: p.state.stats.examples,
        batches: p.state.stats.batches,
        examples_per_s: Number(ratePerSecond(s.rates[p.task] ?? []).toFixed(2)),
        backlog_files: pipeline ? pipeline.backlog() : null,
        buffered_rows: p.buffered,
        files_consumed: p.state.cursor.consumed.size,
        quarantined: p.state.quarantined,
        skipped_rows: p.state.skippedRows,
        current: p.state.cursor.current ?? null,
        examples_since_version: examplesSince(p, s.last),
      }];
    })),
  };
}

/**
 * Relative L2 change of the mean Fisher (sums / examples) since `published`; Infinity before any
 * version, and for Gram statistics (the config refuses relative_change with them).
 */
export function relativeChange(stats: TaskStatistics, published: PublishedMark['tasks'][string] | undefined): number {
  if (!published?.head || !published.neuron || published.examples === 0 || isGramStats(stats)) return Infinity;
  if (stats.examples === 0) return 0;
  let diff = 0;
  let base = 0;
  const add = (now: Float64Array, then: Float64Array): void => {
    for (let k = 0; k < now.length; k++) {
      const a = now[k]! / stats.examples;
      const b = then[k]! / published.examples;
      diff += (a - b) ** 2;
      base += b * b;
    }
  };
  add(stats.head, published.head);
  add(stats.neuron, published.neuron);
  return base === 0 ? (diff === 0 ? 0 : Infinity) : Math.sqrt(diff / base);
}

function memoryMB(): JobStatus['memory'] {
  const m = process.memoryUsage();
  const mb = (bytes: number) => Number((bytes / 2 ** 20).toFixed(1));
  return { rss_mb: mb(m.rss), heap_used_mb: mb(m.heapUsed), external_mb: mb(m.external) };
}
