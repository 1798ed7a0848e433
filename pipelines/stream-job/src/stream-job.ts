import { promises as fs } from 'node:fs';
import path from 'node:path';
import {
  bufferCount,
  concat,
  concatMap,
  connect,
  defer,
  EMPTY,
  endWith,
  exhaustMap,
  filter,
  finalize,
  from,
  fromEvent,
  ignoreElements,
  interval,
  lastValueFrom,
  map,
  merge,
  type Observable,
  type OperatorFunction,
  ReplaySubject,
  share,
  Subject,
  take,
  takeUntil,
  tap,
} from 'rxjs';
import { acquireLock, logEvent, refuseOutputOnInputs, UserError, writeFileAtomic } from '@fisher-merge/core';
import {
  arrowIpcSource,
  DirectoryWatcher,
  FlowControl,
  padBatches,
  parquetRowCount,
  parquetSource,
  releaseCredits,
  selectedRowCount,
  skipRowsBefore,
  tailFile,
  taskColumns,
  tokenize,
  watchedParquetSource,
  type ModelBatch,
  type SourceBatch,
  type TextTokenizer,
} from '@fisher-merge/data';
import { openEngine } from '@fisher-merge/engines';
import { decayFisher, emptyMaskFisher, foldFisher, maskFisherContributions, type ContributedBatch, type DeadBatch, type FisherUpdate, type MaskFisher, type MaskFisherShape } from '@fisher-merge/fisher';
import type { JobMetrics } from '@fisher-merge/metrics';
import { loadTaskModel } from '@fisher-merge/task-model';
import { modelFingerprint, type Engine, type LoadedModel } from '@fisher-merge/model';
import type { StreamConfig, StreamTask } from './config.ts';
import { RowLedger } from './ledger.ts';
import { exhaustMapWithTrailing, takeControlFile } from './operators.ts';
import { readLatest, VersionPublisher, type VersionManifest } from './publish.ts';
import { outLayout, readStreamState, serializeState, type PublishedMark, type StreamState, type TaskState } from './state.ts';
import { RateMeter, type JobStatus } from './status.ts';

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
  /**
   * Where each task's batches become Fisher contributions: by default its engine in this process;
   * the queue coordinator passes workers reached through Redis.
   */
  compute?: (task: LoadedTask) => Promise<TaskCompute>;
  /**
   * Engine threads of the in-process engines (default: every core). onnxruntime's sums depend on it
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

/** A task's model as the stream job loaded it, for the code that computes its contributions. */
export interface LoadedTask {
  name: string;
  model: LoadedModel;
  config: StreamConfig;
}

/** How one task's batches become contributions, in batch order. */
export interface TaskCompute {
  /** `stop$` fires when the job stops: no more batches come, and those still out may be dropped. */
  contributions: (stop$: Observable<unknown>) => OperatorFunction<ModelBatch, ContributedBatch<ModelBatch> | DeadBatch<ModelBatch>>;
  /** Batches the pipeline may hold between cutting and folding (the source's flow window is sized for them). */
  inFlightBatches?: number;
  /** Resolves once no computation runs; then `dispose` frees what `compute` opened. */
  close(): Promise<void>;
}

export interface StreamJobResult {
  stats: Record<string, MaskFisher>;
  lastVersion?: number;
  stoppedBy: 'drained' | 'stop';
}

/** Name under which an Arrow IPC stream's cursor is kept (one stream per task). */
const STREAM_CURSOR = '<stream>';

interface TaskRun {
  task: StreamTask;
  name: string;
  tokenizer: TextTokenizer;
  padTokenId: number;
  compute: TaskCompute;
  state: TaskState;
  ledger: RowLedger;
  watcher?: DirectoryWatcher;
  rate: RateMeter;
  examplesSincePublish: number;
}

/**
 * `fisher-merge stream`: one RxJS graph. Per task, a source of labelled rows (a watched Parquet
 * directory or an Arrow IPC stream) is tokenized, cut into batches, turned into Fisher
 * contributions (by its engine, or by queue workers) and folded (`scan`, with decay as an operator)
 * into its running statistics. Publish requests (policies, interval, control file, SIGHUP) are one
 * merged stream into a publisher that runs one merge at a time; checkpoint requests (every
 * `checkpoint_every` batches, after a version, after a skipped file) are another; a stop ends the
 * batch streams (`takeUntil(stop$)`), and everything downstream completes behind them. Credits
 * (FlowControl) bound what each task holds in memory however large the backlog; the checkpoint
 * records, per source, exactly the rows in the statistics, so a restart after `kill -9` re-reads
 * exactly the rows not yet counted.
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
  const runs: TaskRun[] = [];
  try {
    // A stop file left by a run that died before acting on it must not stop this one at once.
    await fs.rm(layout.stopFile, { force: true });
    const saved = await readStreamState(layout.checkpoint);
    for (const name of Object.keys(saved?.tasks ?? {})) {
      if (!config.tasks.some((t) => t.spec.name === name)) throw new UserError(`${layout.checkpoint}: the checkpoint holds task '${name}', which the config no longer lists; use a new 'out' directory`);
    }
    const compute = options.compute ?? ((task: LoadedTask) => localCompute(task, options.threads));
    for (const task of config.tasks) runs.push(await openTask(task, config, saved, compute));
    return await runTasks(config, options, runs, saved);
  } finally {
    await Promise.all(runs.map((r) => r.compute.close()));
    await lock.release();
  }
}

async function openTask(task: StreamTask, config: StreamConfig, saved: StreamState | undefined, compute: (task: LoadedTask) => Promise<TaskCompute>): Promise<TaskRun> {
  const name = task.spec.name;
  const { model, tokenizer, task: spec } = await loadTaskModel(task.model, task.spec, { prefetchFingerprint: true });
  const previous = saved?.tasks[name];
  const fingerprint = await modelFingerprint(model);
  if (previous) checkResumable(outLayout(config.out).checkpoint, name, previous.stats, config, fingerprint, model.config);
  const state: TaskState = previous ?? {
    stats: emptyMaskFisher(
      { numLayers: model.config.numLayers, numHeads: model.config.numHeads, intermediateSize: model.config.intermediateSize },
      { mode: config.mode, batchSize: config.batchSize, task: name, modelFingerprint: fingerprint },
    ),
    cursor: { consumed: new Set() },
    quarantined: 0,
  };
  return {
    task: { ...task, spec },
    name,
    tokenizer,
    padTokenId: model.config.padTokenId,
    compute: await compute({ name, model, config }),
    state,
    ledger: new RowLedger(state.cursor),
    rate: new RateMeter(),
    examplesSincePublish: state.stats.examples - (saved?.published?.tasks[name]?.examples ?? 0),
  };
}

/** The task's own engine in this process; closing waits for a call a stop or an error left running. */
async function localCompute({ name, model, config }: LoadedTask, threads: number | undefined): Promise<TaskCompute> {
  const engine = await openEngine(config.engine, model.weights, { log: (line) => logEvent('stream.engine', { task: name, engine: line }), threads });
  const running = new Set<Promise<unknown>>();
  const tracked: Engine = {
    name: engine.name,
    config: engine.config,
    forward: (b) => engine.forward(b),
    parameterFisher: (b, mode) => engine.parameterFisher(b, mode),
    maskGradients: (b) => {
      const call = engine.maskGradients(b);
      running.add(call);
      void call.catch(() => undefined).finally(() => running.delete(call));
      return call;
    },
    dispose: () => engine.dispose(),
  };
  return {
    contributions: () => maskFisherContributions(tracked, config.mode),
    close: async () => {
      await Promise.allSettled([...running]);
      await engine.dispose();
    },
  };
}

async function runTasks(config: StreamConfig, options: StreamJobOptions, runs: TaskRun[], saved: StreamState | undefined): Promise<StreamJobResult> {
  const layout = outLayout(config.out);
  const streamState: StreamState = { tasks: Object.fromEntries(runs.map((r) => [r.name, r.state])), ...(saved?.published ? { published: saved.published } : {}) };
  const publisher = await VersionPublisher.open(config.out);
  // `latest` may be ahead of the checkpoint when a crash came between publishing and checkpointing.
  let lastVersion = (await readLatest(config.out)) ?? saved?.published?.version;
  const idle = {
    ...(options.exitWhenIdleMs !== undefined ? { idleMs: options.exitWhenIdleMs } : {}),
    ...(options.drain ? { drain: options.drain } : {}),
  };

  // --- control: ticks drive status and control files; stop$ ends the batch streams ---------------
  const ticks$ = interval(options.statusIntervalMs ?? 500).pipe(share());
  const controlFile = (file: string): Observable<unknown> => ticks$.pipe(exhaustMap(() => takeControlFile(file)), filter(Boolean));
  const signals = (...names: NodeJS.Signals[]): Observable<unknown> => (options.handleSignals ? merge(...names.map((n) => fromEvent(process, n))) : EMPTY);
  let stopReason: string | undefined;
  const stop$ = merge(
    options.signal ? (options.signal.aborted ? from(['signal']) : fromEvent(options.signal, 'abort').pipe(map(() => 'signal'))) : EMPTY,
    controlFile(layout.stopFile).pipe(map(() => 'stop file')),
    signals('SIGINT', 'SIGTERM').pipe(map(() => 'signal')),
  ).pipe(
    take(1),
    tap((reason) => {
      stopReason = reason;
      logEvent('stream.stopping', { reason });
    }),
    share({ connector: () => new ReplaySubject(1) }),
  );
  // Files skipped whole (quarantined, empty) change the cursor without a batch: checkpoint them too.
  const skippedFile$ = new Subject<void>();

  // --- per task: source -> tokenize -> batches -> contributions -> decay -> fold -> commit --------
  /** Emits the task's run after each batch it folded in. */
  const taskUpdates = (run: TaskRun): Observable<TaskRun> => {
    const flow = new FlowControl(Math.max(config.flowWindow, sourceBatchesFor(run.compute.inFlightBatches ?? 0, config)));
    return sourceOf(run, flow).pipe(
      tokenize(run.tokenizer, run.task.spec, { maxLength: config.maxLength }),
      padBatches({ batchSize: config.batchSize, padTokenId: run.padTokenId, flow, allowEmpty: true }),
      // A stop takes no more batches (an incomplete one stays unread); those already cut finish.
      takeUntil(stop$),
      contributionsPastDead(run, flow),
      decayFisher(config.decayHalfLife),
      foldFisher(() => run.state.stats),
      tap((update) => commit(run, update)),
      releaseCredits(flow),
      map(() => run),
    );
  };

  /** The task's contributions; a batch a queue dead-lettered is passed over: its rows move the cursor, never the statistics. */
  const contributionsPastDead = (run: TaskRun, flow: FlowControl): OperatorFunction<ModelBatch, ContributedBatch<ModelBatch>> => (batches) =>
    batches.pipe(
      run.compute.contributions(stop$),
      filter((item): item is ContributedBatch<ModelBatch> => {
        if (!('dead' in item)) return true;
        logEvent('stream.batch_dead', { task: run.name, rows: item.batch.tokens.batchSize, reason: item.dead.reason });
        run.ledger.advance(item.batch.tokens.batchSize);
        flow.release(item.batch.completedSources.length);
        return false;
      }),
    );

  /** Statistics and cursor change together, synchronously: every checkpoint is consistent. */
  const commit = (run: TaskRun, { stats, batch }: FisherUpdate<ModelBatch>): void => {
    run.state.stats = stats;
    for (const file of run.ledger.advance(batch.tokens.batchSize)) logEvent('stream.file_done', { task: run.name, file });
    run.examplesSincePublish += batch.tokens.batchSize;
    run.rate.add(batch.tokens.batchSize);
    options.metrics?.examples.set({ task: run.name }, stats.examples);
    options.metrics?.batchesFolded.set({ task: run.name }, stats.batches);
  };

  const sourceOf = (run: TaskRun, flow: FlowControl): Observable<SourceBatch> => {
    const columns = taskColumns(run.task.spec);
    const input = run.task.input;
    if (input.kind === 'watch') return watchedSource(run, input, flow, columns);
    const startRow = run.state.cursor.current?.row ?? 0;
    return defer(() => {
      // Per subscription: unsubscribing stops following the file.
      const unsubscribed = new AbortController();
      const stream = input.path === '-' ? process.stdin : tailFile(input.path, { pollMs: input.pollMs, signal: unsubscribed.signal, ...idle });
      return arrowIpcSource(stream, { columns, flow, name: input.path === '-' ? '<stdin>' : input.path, allowEmpty: true }).pipe(
        skipRowsBefore(startRow, flow),
        tap((b) => run.ledger.push(STREAM_CURSOR, b.source.rowOffset + (b.selection?.[0] ?? 0), selectedRowCount(b))),
        finalize(() => unsubscribed.abort()),
      );
    });
  };

  const watchedSource = (run: TaskRun, input: Extract<StreamTask['input'], { kind: 'watch' }>, flow: FlowControl, columns: string[]): Observable<SourceBatch> => {
    const { state, ledger, name } = run;
    const watcher = new DirectoryWatcher(input.dir, { ready: input.ready, pollMs: input.pollMs, ignore: (file) => state.cursor.consumed.has(path.basename(file)), ...idle });
    run.watcher = watcher;
    const validate = async (file: string): Promise<number> => {
      const rows = await parquetRowCount(file);
      if (rows > 0) {
        // Whole file first: a bad row must not leave part of a file in the statistics.
        await lastValueFrom(parquetSource(file, { columns, batchSize: config.sourceBatchRows }).pipe(tokenize(run.tokenizer, run.task.spec, { maxLength: config.maxLength }), ignoreElements()), { defaultValue: undefined });
      }
      return rows;
    };
    return watchedParquetSource(watcher, {
      columns,
      batchSize: config.sourceBatchRows,
      flow,
      prepare: async (file) => {
        const base = path.basename(file);
        let rows: number;
        try {
          rows = await validate(file);
        } catch (e) {
          if (!(e instanceof UserError)) throw e;
          await quarantine(layout.quarantine, name, file, input.ready, e.message);
          if (state.cursor.current?.file === base) delete state.cursor.current;
          state.quarantined++;
          skippedFile$.next();
          return undefined;
        }
        if (rows === 0) {
          ledger.finish(base);
          skippedFile$.next();
          logEvent('stream.file_done', { task: name, file: base, rows: 0 });
          return undefined;
        }
        ledger.expectFile(base, rows);
        return state.cursor.current?.file === base ? state.cursor.current.row : 0;
      },
    }).pipe(tap((b) => ledger.push(path.basename(b.source.file), b.source.rowOffset + (b.selection?.[0] ?? 0), selectedRowCount(b))));
  };

  // --- publishing: one merge at a time ------------------------------------------------------------
  const hasNews = (): boolean => runs.some((r) => r.examplesSincePublish > 0);
  let deferredLogged = false;
  const publishOnce = async (reason: string): Promise<VersionManifest | undefined> => {
    if (!hasNews()) {
      // An operator who asked for a version should hear why none came.
      if (reason === 'trigger') logEvent('stream.publish_skipped', { reason, why: `no new examples since version ${lastVersion ?? 'none'}` });
      return undefined;
    }
    const empty = runs.filter((r) => r.state.stats.examples === 0).map((r) => r.name);
    if (empty.length > 0) {
      if (!deferredLogged) logEvent('stream.publish_deferred', { reason, waiting_for: empty });
      deferredLogged = true;
      return undefined;
    }
    const snapshot = runs.map((r) => ({
      run: r,
      stats: r.state.stats,
      cursor: { consumed: new Set(r.state.cursor.consumed), ...(r.state.cursor.current ? { current: { ...r.state.cursor.current } } : {}) },
      examples: r.examplesSincePublish,
    }));
    const started = performance.now();
    let manifest: VersionManifest;
    try {
      manifest = await publisher.publish({
        reason,
        merge: config.merge,
        tasks: snapshot.map((s) => ({ name: s.run.name, model: s.run.task.model, lambda: s.run.task.lambda, stats: s.stats, cursor: s.cursor })),
      });
    } catch (e) {
      // A candidate the merge refuses (a non-finite tensor, say) is never published: nothing lands in
      // versions/, latest stays, and the job goes on folding; the next policy firing tries again.
      if (!(e instanceof UserError)) throw e;
      logEvent('stream.version_failed', { reason, error: e.message, latest: lastVersion ?? null });
      return undefined;
    }
    for (const s of snapshot) s.run.examplesSincePublish -= s.examples;
    const mark: PublishedMark = { version: manifest.version, tasks: Object.fromEntries(snapshot.map((s) => [s.run.name, { examples: s.stats.examples, head: s.stats.head, neuron: s.stats.neuron }])) };
    streamState.published = mark;
    lastVersion = manifest.version;
    options.metrics?.versions.inc();
    options.metrics?.publishSeconds.observe((performance.now() - started) / 1000);
    await options.published?.(manifest, path.join(layout.versions, String(manifest.version)));
    logEvent('stream.published', { version: manifest.version, reason, seconds: Number(((performance.now() - started) / 1000).toFixed(3)), examples: Object.fromEntries(snapshot.map((s) => [s.run.name, s.stats.examples])) });
    return manifest;
  };
  const policyReason = (run: TaskRun): string | undefined => {
    const policy = config.publish;
    if (policy.everyExamples !== undefined && run.examplesSincePublish >= policy.everyExamples) return 'every_examples';
    if (policy.relativeChange !== undefined && relativeChange(run.state.stats, streamState.published?.tasks[run.name]) > policy.relativeChange) return 'relative_change';
    return undefined;
  };
  const writeCheckpoint = () => writeFileAtomic(layout.checkpoint, serializeState(streamState));

  // --- status -------------------------------------------------------------------------------------
  const startedAt = new Date().toISOString();
  const status = (running: boolean): JobStatus => ({
    pid: process.pid,
    running,
    started: startedAt,
    updated: new Date().toISOString(),
    last_version: lastVersion ?? null,
    memory: memoryMB(),
    ...options.status,
    tasks: Object.fromEntries(runs.map((r) => [r.name, {
      examples: r.state.stats.examples,
      batches: r.state.stats.batches,
      examples_per_s: Number(r.rate.perSecond().toFixed(2)),
      backlog_files: r.watcher ? r.watcher.backlog : null,
      buffered_rows: r.ledger.buffered,
      files_consumed: r.state.cursor.consumed.size,
      quarantined: r.state.quarantined,
      current: r.state.cursor.current ?? null,
      examples_since_version: r.examplesSincePublish,
    }])),
  });
  const writeStatus = (running: boolean) => writeFileAtomic(layout.status, `${JSON.stringify(status(running), null, 2)}\n`);
  let lastLog = performance.now();
  const tick = async (): Promise<void> => {
    for (const r of runs) r.rate.sample();
    await writeStatus(true).catch((e: unknown) => logEvent('stream.status_failed', { error: (e as Error).message }));
    if (performance.now() - lastLog >= config.logIntervalS * 1000) {
      lastLog = performance.now();
      const s = status(true);
      for (const [task, t] of Object.entries(s.tasks)) logEvent('stream.progress', { task, examples: t.examples, examples_per_s: t.examples_per_s, backlog_files: t.backlog_files, last_version: s.last_version });
    }
  };

  // --- the job: every stream below completes once the batch streams have ------------------------
  const job$ = merge(...runs.map(taskUpdates)).pipe(
    connect((updates) => {
      const end$ = updates.pipe(ignoreElements(), endWith(true));
      const publishRequests$ = merge(
        updates.pipe(map(policyReason), filter((r): r is string => r !== undefined)),
        config.publish.intervalS !== undefined ? interval(config.publish.intervalS * 1000).pipe(map(() => 'interval')) : EMPTY,
        controlFile(layout.publishFile).pipe(map(() => 'trigger')),
        signals('SIGHUP').pipe(map(() => 'trigger')),
      ).pipe(takeUntil(end$));
      const published$ = publishRequests$.pipe(exhaustMapWithTrailing((reason) => from(publishOnce(reason)).pipe(filter(Boolean))));
      const checkpoints$ = merge(updates.pipe(bufferCount(config.checkpointEvery)), skippedFile$.pipe(takeUntil(end$)), published$).pipe(exhaustMapWithTrailing(() => writeCheckpoint()));
      const status$ = ticks$.pipe(takeUntil(end$), exhaustMap(tick));
      return merge(checkpoints$, status$);
    }),
    ignoreElements(),
  );
  const lastPublish$ = defer(() => (config.publish.onStop && hasNews() ? from(publishOnce('stop')).pipe(concatMap(writeCheckpoint)) : EMPTY));

  for (const r of runs) options.metrics?.examples.set({ task: r.name }, r.state.stats.examples);
  logEvent('stream.started', { out: config.out, tasks: runs.map((r) => ({ task: r.name, examples: r.state.stats.examples, files_consumed: r.state.cursor.consumed.size, resume: r.state.cursor.current ?? null })), last_version: lastVersion ?? null });
  try {
    await lastValueFrom(concat(job$, defer(writeCheckpoint), lastPublish$), { defaultValue: undefined });
  } finally {
    await writeStatus(false).catch(() => undefined);
  }
  const stoppedBy = stopReason === undefined ? 'drained' : 'stop';
  logEvent('stream.stopped', { by: stoppedBy, last_version: lastVersion ?? null, examples: Object.fromEntries(runs.map((r) => [r.name, r.state.stats.examples])) });
  return { stats: Object.fromEntries(runs.map((r) => [r.name, r.state.stats])), ...(lastVersion !== undefined ? { lastVersion } : {}), stoppedBy };
}

/** Source batches needed to hold `batches` model batches between cutting and folding, plus one being filled. */
function sourceBatchesFor(batches: number, config: StreamConfig): number {
  return Math.ceil((batches * config.batchSize) / config.sourceBatchRows) + 2;
}

async function quarantine(root: string, task: string, file: string, ready: Extract<StreamTask['input'], { kind: 'watch' }>['ready'], reason: string): Promise<void> {
  const dir = path.join(root, task);
  await fs.mkdir(dir, { recursive: true });
  const target = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${path.basename(file)}`);
  if (!(await moveFile(file, target))) {
    logEvent('stream.file_vanished', { task, file: path.basename(file), reason });
    return;
  }
  if (ready.kind === 'marker') await fs.rm(file + ready.suffix, { force: true });
  await writeFileAtomic(`${target}.reason.txt`, `${reason}\n`);
  logEvent('stream.quarantined', { task, file: path.basename(file), reason, moved_to: target });
}

function checkResumable(file: string, task: string, stats: MaskFisher, config: StreamConfig, modelFingerprint: string, shape: MaskFisherShape): void {
  const differs = (what: string, was: unknown, now: unknown): never => {
    throw new UserError(`${file}: task '${task}' was accumulated with ${what} ${String(was)}, the config now says ${String(now)}; use a new 'out' directory`);
  };
  if (stats.mode !== config.mode) differs('fisher.mode', stats.mode, config.mode);
  if (stats.mode === 'batch' && stats.batchSize !== config.batchSize) differs('fisher.batch_size', stats.batchSize, config.batchSize);
  if (stats.modelFingerprint !== modelFingerprint) differs('model fingerprint', stats.modelFingerprint.slice(0, 12), modelFingerprint.slice(0, 12));
  const [was, now] = [stats, shape].map((s) => `L${s.numLayers} H${s.numHeads} I${s.intermediateSize}`);
  if (was !== now) differs('the statistics shape', was, `the model's ${now}`);
}

/** Relative L2 change of the mean Fisher (sums / examples) since `published`; Infinity before any version. */
export function relativeChange(stats: MaskFisher, published: PublishedMark['tasks'][string] | undefined): number {
  if (!published || published.examples === 0) return Infinity;
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

/** Rename, or copy and delete when the quarantine is on another file system; false if `from` is gone. */
async function moveFile(from: string, to: string): Promise<boolean> {
  try {
    await fs.rename(from, to);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code !== 'EXDEV') throw e;
    await fs.copyFile(from, to);
    await fs.rm(from);
  }
  return true;
}
