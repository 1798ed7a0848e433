import { promises as fs } from 'node:fs';
import path from 'node:path';
import { concatMap, count, finalize, fromEvent, lastValueFrom, map, merge, of, takeUntil, tap, type Observable } from 'rxjs';
import { logEvent, UserError, writeFileAtomic } from '@fisher-merge/core';
import {
  arrowIpcSource,
  DirectoryWatcher,
  FlowControl,
  padBatches,
  parquetRowCount,
  parquetSource,
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
import { accumulateFisher, decayStats, emptyMaskFisher, type MaskFisher } from '@fisher-merge/fisher';
import { loadTaskModel } from '@fisher-merge/merge-job';
import type { Engine } from '@fisher-merge/model';
import type { StreamConfig, StreamTask } from './config.ts';
import { RowLedger } from './ledger.ts';
import { readLatest, VersionPublisher } from './publish.ts';
import { CheckpointWriter, outLayout, readStreamState, serializeState, type PublishedMark, type StreamState, type TaskState } from './state.ts';
import { RateMeter, type JobStatus } from './status.ts';

export interface StreamJobOptions {
  /**
   * Drain mode: a task's input is finished once its source has had nothing new (no unread file,
   * no new bytes) for this long; the rows of an incomplete last batch then form a smaller batch,
   * as at the end of the one-shot `fisher` command, and the job ends when every task has drained.
   * Without it the job runs until stopped, and a stop leaves an incomplete batch's rows unread.
   */
  exitWhenIdleMs?: number;
  /** Stops the job (as the stop control file does) when aborted. */
  signal?: AbortSignal;
  /** SIGHUP publishes a version; SIGINT/SIGTERM stop the job (the CLI). */
  handleSignals?: boolean;
  /** How often status.json and the control files are looked at (default 500 ms). */
  statusIntervalMs?: number;
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
  engine: Engine;
  state: TaskState;
  ledger: RowLedger;
  watcher?: DirectoryWatcher;
  rate: RateMeter;
  examplesSincePublish: number;
}

/**
 * `fisher-merge stream`: per task, a source of labelled rows (a watched Parquet directory or an
 * Arrow IPC stream) is tokenized, batched and run through the task's model into its running mask
 * Fisher statistics; all tasks form one RxJS graph. After every `checkpoint_every` batches the
 * statistics and, per source, the exact rows consumed are checkpointed atomically, so a restart
 * after `kill -9` re-reads exactly the rows not yet counted. Publish policies merge the latest
 * statistics into a new version (see VersionPublisher). Credits (FlowControl) bound what each task
 * holds in memory however large the backlog.
 */
export async function runStreamJob(config: StreamConfig, options: StreamJobOptions = {}): Promise<StreamJobResult> {
  const layout = outLayout(config.out);
  await fs.mkdir(config.out, { recursive: true });
  // A stop file left by a run that died before acting on it must not stop this one at once.
  await fs.rm(layout.stopFile, { force: true });
  const saved = await readStreamState(layout.checkpoint);
  const savedNames = Object.keys(saved?.tasks ?? {});
  for (const name of savedNames) {
    if (!config.tasks.some((t) => t.spec.name === name)) throw new UserError(`${layout.checkpoint}: the checkpoint holds task '${name}', which the config no longer lists; use a new 'out' directory`);
  }

  const runs = await Promise.all(config.tasks.map(async (task): Promise<TaskRun> => {
    const name = task.spec.name;
    const { model, tokenizer } = await loadTaskModel(task.model, task.spec);
    const previous = saved?.tasks[name];
    if (previous) checkResumable(layout.checkpoint, name, previous.stats, config, model.fingerprint);
    const state: TaskState = previous ?? {
      stats: emptyMaskFisher(
        { numLayers: model.config.numLayers, numHeads: model.config.numHeads, intermediateSize: model.config.intermediateSize },
        { mode: config.mode, batchSize: config.batchSize, task: name, modelFingerprint: model.fingerprint },
      ),
      cursor: { consumed: new Set() },
      quarantined: 0,
    };
    const engine = await openEngine(config.engine, model.weights, { log: (line) => logEvent('stream.engine', { task: name, engine: line }) });
    return { task, name, tokenizer, padTokenId: model.config.padTokenId, engine, state, ledger: new RowLedger(state.cursor), rate: new RateMeter(), examplesSincePublish: state.stats.examples - (saved?.published?.tasks[name]?.examples ?? 0) };
  }));
  const streamState: StreamState = { tasks: Object.fromEntries(runs.map((r) => [r.name, r.state])), ...(saved?.published ? { published: saved.published } : {}) };
  const checkpoint = new CheckpointWriter(layout.checkpoint, () => serializeState(streamState));
  const publisher = await VersionPublisher.open(config.out);
  // `latest` may be ahead of the checkpoint when a crash came between publishing and checkpointing.
  let lastVersion = (await readLatest(config.out)) ?? saved?.published?.version;

  const stop = new AbortController();
  const teardown = new AbortController();
  const inflight = new Set<Promise<unknown>>();
  let batchesSinceCheckpoint = 0;
  let stoppedBy: StreamJobResult['stoppedBy'] = 'drained';
  const requestStop = (why: string): void => {
    if (stop.signal.aborted) return;
    stoppedBy = 'stop';
    logEvent('stream.stopping', { reason: why });
    stop.abort();
  };
  options.signal?.addEventListener('abort', () => requestStop('signal'), { once: true });

  // --- publishing: one merge at a time; requests during a merge collapse into one more -----------
  let publishing: Promise<void> | undefined;
  let pendingReason: string | undefined;
  let publishFailure: unknown;
  const hasNews = (): boolean => runs.some((r) => r.examplesSincePublish > 0);
  const requestPublish = (reason: string): void => {
    if (publishing) {
      pendingReason ??= reason;
      return;
    }
    publishing = (async () => {
      try {
        let why: string | undefined = reason;
        while (why !== undefined) {
          await publishOnce(why);
          why = pendingReason;
          pendingReason = undefined;
        }
      } catch (e) {
        publishFailure = e;
        requestStop('publish failed');
      } finally {
        publishing = undefined;
      }
    })();
  };
  let deferredLogged = false;
  const publishOnce = async (reason: string): Promise<void> => {
    if (!hasNews()) {
      // An operator who asked for a version should hear why none came.
      if (reason === 'trigger') logEvent('stream.publish_skipped', { reason, why: `no new examples since version ${lastVersion ?? 'none'}` });
      return;
    }
    const empty = runs.filter((r) => r.state.stats.examples === 0).map((r) => r.name);
    if (empty.length > 0) {
      if (!deferredLogged) logEvent('stream.publish_deferred', { reason, waiting_for: empty });
      deferredLogged = true;
      return;
    }
    const snapshot = runs.map((r) => ({
      run: r,
      stats: r.state.stats,
      cursor: { consumed: new Set(r.state.cursor.consumed), ...(r.state.cursor.current ? { current: { ...r.state.cursor.current } } : {}) },
      examples: r.examplesSincePublish,
    }));
    const started = performance.now();
    const manifest = await publisher.publish({
      reason,
      merge: config.merge,
      tasks: snapshot.map((s) => ({ name: s.run.name, model: s.run.task.model, lambda: s.run.task.lambda, stats: s.stats, cursor: s.cursor })),
    });
    for (const s of snapshot) s.run.examplesSincePublish -= s.examples;
    const mark: PublishedMark = { version: manifest.version, tasks: Object.fromEntries(snapshot.map((s) => [s.run.name, { examples: s.stats.examples, head: s.stats.head, neuron: s.stats.neuron }])) };
    streamState.published = mark;
    lastVersion = manifest.version;
    checkpoint.request();
    logEvent('stream.published', { version: manifest.version, reason, seconds: Number(((performance.now() - started) / 1000).toFixed(3)), examples: Object.fromEntries(snapshot.map((s) => [s.run.name, s.stats.examples])) });
  };
  const checkPolicies = (run: TaskRun): void => {
    const policy = config.publish;
    if (policy.everyExamples !== undefined && run.examplesSincePublish >= policy.everyExamples) return requestPublish('every_examples');
    if (policy.relativeChange !== undefined && relativeChange(run.state.stats, streamState.published?.tasks[run.name]) > policy.relativeChange) requestPublish('relative_change');
  };

  // --- per-task pipelines ----------------------------------------------------------------------
  const pipeline = (run: TaskRun): Observable<void> => {
    const { task, name, state, ledger } = run;
    const flow = new FlowControl(config.flowWindow);
    const columns = taskColumns(task.spec);
    const source = task.input.kind === 'watch'
      ? watchedSource(run, task.input, flow, columns)
      : ipcSource(task.input, flow, columns, state.cursor.current?.row ?? 0, (b) => ledger.push(STREAM_CURSOR, b.source.rowOffset + (b.selection?.[0] ?? 0), selectedRowCount(b)));
    return source.pipe(
      tokenize(run.tokenizer, task.spec, { maxLength: config.maxLength }),
      padBatches({ batchSize: config.batchSize, padTokenId: run.padTokenId, flow, allowEmpty: true }),
      concatMap((batch) => track(accumulateOne(run, batch))),
      map(({ stats, batch }) => {
        // Statistics and cursor change together, synchronously: every checkpoint is consistent.
        state.stats = stats;
        for (const file of ledger.advance(batch.tokens.batchSize)) logEvent('stream.file_done', { task: name, file });
        flow.release(batch.completedSources.length);
        run.examplesSincePublish += batch.tokens.batchSize;
        run.rate.add(batch.tokens.batchSize);
        if (++batchesSinceCheckpoint >= config.checkpointEvery) {
          batchesSinceCheckpoint = 0;
          checkpoint.request();
        }
        checkPolicies(run);
      }),
    );
  };

  const track = <T>(promise: Promise<T>): Promise<T> => {
    inflight.add(promise);
    return promise.finally(() => inflight.delete(promise));
  };

  const accumulateOne = (run: TaskRun, batch: ModelBatch) => {
    const factor = config.decayHalfLife ? 0.5 ** (batch.tokens.batchSize / config.decayHalfLife) : 1;
    const initial = factor === 1 ? run.state.stats : decayStats(run.state.stats, factor);
    return lastValueFrom(of(batch).pipe(accumulateFisher<ModelBatch>(run.engine, { mode: config.mode, task: run.name, modelFingerprint: run.state.stats.modelFingerprint, initial })));
  };

  const watchedSource = (run: TaskRun, input: Extract<StreamTask['input'], { kind: 'watch' }>, flow: FlowControl, columns: string[]): Observable<SourceBatch> => {
    const { state, ledger, name } = run;
    const watcher = new DirectoryWatcher(input.dir, {
      ready: input.ready,
      pollMs: input.pollMs,
      ignore: (file) => state.cursor.consumed.has(path.basename(file)),
      ...(options.exitWhenIdleMs !== undefined ? { idleMs: options.exitWhenIdleMs } : {}),
    });
    run.watcher = watcher;
    const validate = async (file: string): Promise<number> => {
      const rows = await parquetRowCount(file);
      if (rows > 0) {
        // Whole file first: a bad row must not leave part of a file in the statistics.
        await lastValueFrom(parquetSource(file, { columns, batchSize: config.sourceBatchRows }).pipe(tokenize(run.tokenizer, run.task.spec, { maxLength: config.maxLength }), count()));
      }
      return rows;
    };
    return watchedParquetSource(watcher, {
      columns,
      batchSize: config.sourceBatchRows,
      flow,
      signal: teardown.signal,
      prepare: async (file) => {
        const base = path.basename(file);
        let rows: number;
        try {
          rows = await validate(file);
        } catch (e) {
          if (!(e instanceof UserError)) throw e;
          await quarantine(name, file, input.ready, e.message);
          if (state.cursor.current?.file === base) delete state.cursor.current;
          state.quarantined++;
          checkpoint.request();
          return undefined;
        }
        if (rows === 0) {
          ledger.finish(base);
          checkpoint.request();
          logEvent('stream.file_done', { task: name, file: base, rows: 0 });
          return undefined;
        }
        ledger.expectFile(base, rows);
        return state.cursor.current?.file === base ? state.cursor.current.row : 0;
      },
    }).pipe(tap((b) => ledger.push(path.basename(b.source.file), b.source.rowOffset + (b.selection?.[0] ?? 0), selectedRowCount(b))));
  };

  const ipcSource = (input: Extract<StreamTask['input'], { kind: 'ipc' }>, flow: FlowControl, columns: string[], startRow: number, record: (b: SourceBatch) => void): Observable<SourceBatch> => {
    const stream = input.path === '-'
      ? process.stdin
      : tailFile(input.path, { pollMs: input.pollMs, signal: teardown.signal, ...(options.exitWhenIdleMs !== undefined ? { idleMs: options.exitWhenIdleMs } : {}) });
    return arrowIpcSource(stream, { columns, flow, name: input.path === '-' ? '<stdin>' : input.path, allowEmpty: true }).pipe(skipRowsBefore(startRow, flow), tap(record));
  };

  const quarantine = async (task: string, file: string, ready: Extract<StreamTask['input'], { kind: 'watch' }>['ready'], reason: string): Promise<void> => {
    const dir = path.join(layout.quarantine, task);
    await fs.mkdir(dir, { recursive: true });
    const target = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${path.basename(file)}`);
    if (!(await moveFile(file, target))) {
      logEvent('stream.file_vanished', { task, file: path.basename(file), reason });
      return;
    }
    if (ready.kind === 'marker') await fs.rm(file + ready.suffix, { force: true });
    await writeFileAtomic(`${target}.reason.txt`, `${reason}\n`);
    logEvent('stream.quarantined', { task, file: path.basename(file), reason, moved_to: target });
  };

  // --- status, logs, control files, signals ------------------------------------------------------
  const startedAt = new Date().toISOString();
  const status = (running: boolean): JobStatus => ({
    pid: process.pid,
    running,
    started: startedAt,
    updated: new Date().toISOString(),
    last_version: lastVersion ?? null,
    memory: memoryMB(),
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
    if (await exists(layout.stopFile)) {
      await fs.rm(layout.stopFile, { force: true });
      requestStop('stop file');
    }
    if (await exists(layout.publishFile)) {
      await fs.rm(layout.publishFile, { force: true });
      requestPublish('trigger');
    }
    await writeStatus(true);
    if (performance.now() - lastLog >= config.logIntervalS * 1000) {
      lastLog = performance.now();
      const s = status(true);
      for (const [task, t] of Object.entries(s.tasks)) logEvent('stream.progress', { task, examples: t.examples, examples_per_s: t.examples_per_s, backlog_files: t.backlog_files, last_version: s.last_version });
    }
  };
  let ticking = Promise.resolve();
  const tickTimer = setInterval(() => {
    ticking = ticking.then(tick).catch((e: unknown) => logEvent('stream.status_failed', { error: (e as Error).message }));
  }, options.statusIntervalMs ?? 500);
  const intervalTimer = config.publish.intervalS !== undefined ? setInterval(() => requestPublish('interval'), config.publish.intervalS * 1000) : undefined;
  const onHup = (): void => requestPublish('trigger');
  const onStopSignal = (): void => requestStop('signal');
  if (options.handleSignals) {
    process.on('SIGHUP', onHup);
    process.on('SIGINT', onStopSignal);
    process.on('SIGTERM', onStopSignal);
  }

  logEvent('stream.started', { out: config.out, tasks: runs.map((r) => ({ task: r.name, examples: r.state.stats.examples, files_consumed: r.state.cursor.consumed.size, resume: r.state.cursor.current ?? null })), last_version: lastVersion ?? null });
  try {
    await new Promise<void>((resolve, reject) => {
      merge(...runs.map(pipeline))
        .pipe(takeUntil(fromEvent(stop.signal, 'abort')), finalize(() => teardown.abort()))
        .subscribe({ error: reject, complete: resolve });
    });
    // A stop unsubscribes mid-batch: let the engine calls end before the engines are disposed.
    await Promise.allSettled([...inflight]);
    await checkpoint.flush();
    while (publishing) await publishing;
    if (publishFailure) throw publishFailure;
    if (config.publish.onStop && hasNews()) {
      await publishOnce('stop');
      await checkpoint.flush();
    }
    logEvent('stream.stopped', { by: stoppedBy, last_version: lastVersion ?? null, examples: Object.fromEntries(runs.map((r) => [r.name, r.state.stats.examples])) });
    return { stats: Object.fromEntries(runs.map((r) => [r.name, r.state.stats])), ...(lastVersion !== undefined ? { lastVersion } : {}), stoppedBy };
  } finally {
    teardown.abort();
    clearInterval(tickTimer);
    if (intervalTimer) clearInterval(intervalTimer);
    if (options.handleSignals) {
      process.off('SIGHUP', onHup);
      process.off('SIGINT', onStopSignal);
      process.off('SIGTERM', onStopSignal);
    }
    await ticking;
    await writeStatus(false).catch(() => undefined);
    await Promise.allSettled([...inflight]);
    await Promise.all(runs.map((r) => r.engine.dispose()));
  }
}

function checkResumable(file: string, task: string, stats: MaskFisher, config: StreamConfig, modelFingerprint: string): void {
  const differs = (what: string, was: unknown, now: unknown): never => {
    throw new UserError(`${file}: task '${task}' was accumulated with ${what} ${String(was)}, the config now says ${String(now)}; use a new 'out' directory`);
  };
  if (stats.mode !== config.mode) differs('fisher.mode', stats.mode, config.mode);
  if (stats.mode === 'batch' && stats.batchSize !== config.batchSize) differs('fisher.batch_size', stats.batchSize, config.batchSize);
  if (stats.modelFingerprint !== modelFingerprint) differs('model fingerprint', stats.modelFingerprint.slice(0, 12), modelFingerprint.slice(0, 12));
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

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(() => true, () => false);
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
