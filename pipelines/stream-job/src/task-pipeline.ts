import { promises as fs } from 'node:fs';
import path from 'node:path';
import {
  catchError,
  concatMap,
  defer,
  finalize,
  from,
  map,
  type Observable,
  of,
  type OperatorFunction,
  scan,
  takeUntil,
  tap,
  throwError,
  toArray,
} from 'rxjs';
import { clipped, logEvent, UserError, writeFileAtomic, type TokenBatch } from '@fisher-merge/core';
import {
  arrowIpcSource,
  type Clock,
  DirectoryWatcher,
  FlowControl,
  type ModelBatch,
  padBatches,
  parquetSource,
  releaseCredits,
  selectedRowCount,
  skipRowsBefore,
  type SourceBatch,
  tailFile,
  taskColumns,
  type TextTokenizer,
  tokenize,
  watchedFiles,
  withCredits,
} from '@fisher-merge/data';
import { openEngine } from '@fisher-merge/engines';
import { computeGramContribution, emptyGramStats, emptyMaskFisher, gramInputs, maskFisherContributions, type ContributedBatch, type DeadBatch, type MaskFisherShape } from '@fisher-merge/fisher';
import { type Engine, type LoadedModel, modelFingerprint } from '@fisher-merge/model';
import { loadTaskModel } from '@fisher-merge/task-model';
import type { StreamConfig, StreamTask } from './config.ts';
import { letPass } from './operators.ts';
import { isGramStats, statisticName, type StreamState, type TaskState, type TaskStatistics } from './state.ts';
import { foldTaskItem, isMarker, type SourceMarker, type TaskContribution, type TaskProgress } from './task-state.ts';

/** A task's model as the stream job loaded it, for the code that computes its contributions. */
export interface LoadedTask {
  name: string;
  model: LoadedModel;
  config: StreamConfig;
}

/** How one task's batches become contributions, in batch order. */
export interface TaskCompute {
  /**
   * `stop$` fires when the job stops: no more batches come, and those still out may be dropped. A
   * batch for which no contribution will ever come (a queue dead-lettered it) is a DeadBatch.
   */
  contributions: (stop$: Observable<unknown>) => OperatorFunction<ModelBatch, ContributedBatch<ModelBatch, TaskContribution> | DeadBatch<ModelBatch>>;
  /** Batches the pipeline may hold between cutting and folding (the source's flow window is sized for them). */
  inFlightBatches?: number;
  /** Resolves once no computation runs; then `dispose` frees what `compute` opened. */
  close(): Promise<void>;
}

/** A task ready to run: its model loaded, its computation opened, its state as the checkpoint left it. */
export interface OpenedTask {
  task: StreamTask;
  name: string;
  tokenizer: TextTokenizer;
  padTokenId: number;
  compute: TaskCompute;
  /** The fold's seed. */
  initial: TaskProgress;
}

/** Where the task pipelines get their time, stop and drain from (the job's runtime). */
export interface TaskContext {
  config: StreamConfig;
  stop$: Observable<unknown>;
  clock: Clock;
  idle: { idleMs?: number; drain?: AbortSignal };
  quarantineDir: string;
}

/** One task's running pipeline: its fold's states, one per item, and its watched directory's backlog. */
export interface TaskPipeline {
  opened: OpenedTask;
  progress$: Observable<TaskProgress>;
  /** Unread files of a watched directory as of its last listing; null for a stream. */
  backlog: () => number | null;
}

/** Name under which an Arrow IPC stream's cursor is kept (one stream per task). */
export const STREAM_CURSOR = '<stream>';

/** How a task whose model is not the one its statistics were accumulated with is opened: refused (a task of `tasks:`), or restarted from nothing (a task file). */
export type ModelChange = 'refuse' | 'restart';

/**
 * Loads a task's model and opens its computation, from `from` (its last state: the checkpoint's, or
 * the one it left with) or from nothing. Statistics of another model are refused, or (`restart`)
 * dropped with the cursor, so the task reads its source again from the start with the new model.
 */
export async function openTask(task: StreamTask, config: StreamConfig, from: TaskProgress | undefined, how: { checkpointFile: string; modelChange: ModelChange }, compute: (task: LoadedTask) => Promise<TaskCompute>): Promise<OpenedTask> {
  const name = task.spec.name;
  const { model, tokenizer, task: spec } = await loadTaskModel(task.model, task.spec, { prefetchFingerprint: true });
  const fingerprint = await modelFingerprint(model);
  const previous = from?.state.stats;
  const changed = previous && modelChange(previous, fingerprint, model);
  if (changed && how.modelChange === 'refuse') throw new UserError(`${how.checkpointFile}: task '${name}' was accumulated with ${changed.what} ${changed.was}, the config now says ${changed.now}; use a new 'out' directory`);
  if (changed) logEvent('stream.task_restarted', { task: name, why: `the model changed (${changed.what} ${changed.was} -> ${changed.now}): its statistics start again from nothing and its source is read again from the start`, examples_dropped: previous.examples });
  const fresh = () => emptyStatistics(model, config, name, fingerprint);
  const state: TaskState = from && previous && !changed
    // A Gram task without examples has no file of sums: zeros of its model's inputs.
    ? { ...from.state, stats: isGramStats(previous) && previous.examples === 0 ? { ...fresh(), batches: previous.batches } : previous }
    : { stats: fresh(), cursor: { consumed: new Set() }, quarantined: 0, skippedRows: 0 };
  const opened = await compute({ name, model, config });
  // Closed by the run that opened it when it ends, and by the job at its end: once.
  let closing: Promise<void> | undefined;
  return {
    task: { ...task, spec },
    name,
    tokenizer,
    padTokenId: model.config.padTokenId,
    compute: { ...opened, close: () => (closing ??= opened.close()) },
    initial: { task: name, state, folded: from?.folded ?? 0, buffered: 0, event: { kind: 'start' } },
  };
}

/** Statistics of no examples yet, of the kind the config's rule needs. */
function emptyStatistics(model: LoadedModel, config: StreamConfig, task: string, modelFingerprint: string): TaskStatistics {
  if (config.statistic === 'gram') return { ...emptyGramStats(gramInputs(model), { task, modelFingerprint }), batches: 0 };
  const { numLayers, numHeads, intermediateSize } = model.config;
  return emptyMaskFisher({ numLayers, numHeads, intermediateSize }, { mode: config.mode, batchSize: config.batchSize, task, modelFingerprint });
}

/** A task's progress as a checkpoint left it: not running until it joins. */
export function savedProgress(name: string, saved: StreamState): TaskProgress {
  const state = saved.tasks[name]!;
  return { task: name, state, folded: state.stats.examples - (saved.published?.tasks[name]?.examples ?? 0), buffered: 0, event: { kind: 'left' } };
}

/** The task's own engine in this process; closing waits for a call a stop or an error left running. */
export async function localCompute({ name, model, config }: LoadedTask, threads: number | undefined): Promise<TaskCompute> {
  const engine = await openEngine(config.engine, model.weights, { log: (line) => logEvent('stream.engine', { task: name, engine: line }), threads });
  const running = new Set<Promise<unknown>>();
  const track = <R>(call: Promise<R>): Promise<R> => {
    running.add(call);
    void call.catch(() => undefined).finally(() => running.delete(call));
    return call;
  };
  const tracked: Engine = {
    name: engine.name,
    config: engine.config,
    forward: (b) => engine.forward(b),
    parameterFisher: (b, mode) => engine.parameterFisher(b, mode),
    maskGradients: (b) => track(engine.maskGradients(b)),
    ...(engine.inputGrams ? { inputGrams: (b: TokenBatch) => track(engine.inputGrams!(b)) } : {}),
    dispose: () => engine.dispose(),
  };
  const inputs = gramInputs(model);
  return {
    contributions: () => (config.statistic === 'gram'
      ? concatMap(async (batch: ModelBatch) => ({ batch, contribution: await computeGramContribution(tracked, inputs, batch.tokens) }))
      : maskFisherContributions(tracked, config.mode)),
    close: async () => {
      await Promise.allSettled([...running]);
      await engine.dispose();
    },
  };
}

/**
 * One task as a pipeline: source -> batches -> contributions -> one `scan` over the task's state.
 * The source's markers (a file skipped whole, rows read) ride in the same stream and pass the
 * batcher and the computation untouched. A stop takes no more batches (an incomplete one stays
 * unread); those already cut finish. Each folded batch gives back the flow credits of the source
 * batches it finished.
 */
export function taskPipeline(opened: OpenedTask, context: TaskContext): TaskPipeline {
  const { config, stop$ } = context;
  const { compute, initial } = opened;
  const flow = new FlowControl(Math.max(config.flowWindow, sourceBatchesFor(compute.inFlightBatches ?? 0, config)));
  const input = opened.task.input;
  const watcher = input.kind === 'watch'
    ? new DirectoryWatcher(input.dir, { ready: input.ready, pollMs: input.pollMs, ignore: (file) => initial.state.cursor.consumed.has(path.basename(file)), clock: context.clock, ...context.idle })
    : undefined;
  const source = watcher ? watchedSource(opened, watcher, flow, context) : streamSource(opened, flow, context);
  const progress$ = source.pipe(
    letPass(isMarker, padBatches({ batchSize: config.batchSize, padTokenId: opened.padTokenId, flow, allowEmpty: true })),
    takeUntil(stop$),
    letPass(isMarker, compute.contributions(stop$)),
    scan(foldTaskItem(config.decayHalfLife), initial),
    tap(logTaskEvent),
    releaseCredits(flow, ({ event }) => ('sourcesDone' in event ? event.sourcesDone : 0)),
  );
  return { opened, progress$, backlog: () => watcher?.backlog ?? null };
}

function logTaskEvent({ task, event }: TaskProgress): void {
  if (event.kind === 'folded' || event.kind === 'dead') for (const file of event.filesDone) logEvent('stream.file_done', { task, file });
  if (event.kind === 'dead') logEvent('stream.batch_dead', { task, rows: event.rows, reason: event.reason });
  if (event.kind === 'skipped' && event.why === 'empty') logEvent('stream.file_done', { task, file: event.file, rows: 0 });
}

type SourceItem = SourceBatch | SourceMarker;

/** Rows read from a source, each batch after the marker that counts its rows (the batch enters the batcher, the marker passes it). */
const withRowsRead = concatMap((batch: SourceBatch): SourceItem[] => [{ read: selectedRowCount(batch) }, batch]);

/** A tokenized batch under its cursor name (the file's base name, or the stream's). */
const underCursorName = (name: (file: string) => string) => map((item: SourceBatch): SourceBatch => ({ ...item, source: { ...item.source, file: name(item.source.file) } }));

/**
 * The ready files of a watched directory, one at a time, each read once: its rows are tokenized and
 * kept until the whole file has passed, so a bad row never leaves part of a file in the statistics
 * (the file is quarantined, a marker says so). Only then do its batches enter the pipeline, one
 * flow credit each. A file the last run was reading resumes at the checkpoint's row.
 */
function watchedSource(opened: OpenedTask, watcher: DirectoryWatcher, flow: FlowControl, context: TaskContext): Observable<SourceItem> {
  const { config } = context;
  const input = opened.task.input as Extract<StreamTask['input'], { kind: 'watch' }>;
  const resume = opened.initial.state.cursor.current;
  const readFile = (file: string): Observable<SourceItem> => {
    const base = path.basename(file);
    return parquetSource(file, { columns: taskColumns(opened.task.spec), batchSize: config.sourceBatchRows, allowEmpty: true }).pipe(
      skipRowsBefore(resume?.file === base ? resume.row : 0, undefined),
      tokenize(opened.tokenizer, opened.task.spec, { maxLength: config.maxLength }),
      underCursorName(path.basename),
      toArray(),
      concatMap((batches): Observable<SourceItem> => (batches.length === 0 ? of({ skipped: { file: base, why: 'empty' } }) : from(batches).pipe(withCredits(flow), withRowsRead))),
      // Only the read can fail with a UserError, before any of the file's rows has gone on.
      catchError((e: unknown) => (e instanceof UserError ? from(quarantine(context.quarantineDir, opened.name, file, input.ready, e.message)) : throwError(() => e))),
    );
  };
  return watchedFiles(watcher, readFile);
}

/** An Arrow IPC stream (stdin, or a file being appended to), from the row after the checkpoint's. */
function streamSource(opened: OpenedTask, flow: FlowControl, context: TaskContext): Observable<SourceItem> {
  const input = opened.task.input as Extract<StreamTask['input'], { kind: 'ipc' }>;
  const startRow = opened.initial.state.cursor.current?.row ?? 0;
  return defer(() => {
    // Per subscription: unsubscribing stops following the file.
    const unsubscribed = new AbortController();
    const stream = input.path === '-' ? process.stdin : tailFile(input.path, { pollMs: input.pollMs, signal: unsubscribed.signal, clock: context.clock, ...context.idle });
    return arrowIpcSource(stream, { columns: taskColumns(opened.task.spec), flow, name: input.path === '-' ? '<stdin>' : input.path, allowEmpty: true }).pipe(
      skipRowsBefore(startRow, flow),
      tokenize(opened.tokenizer, opened.task.spec, { maxLength: context.config.maxLength }),
      underCursorName(() => STREAM_CURSOR),
      withRowsRead,
      finalize(() => unsubscribed.abort()),
    );
  });
}

/** Source batches needed to hold `batches` model batches between cutting and folding, plus one being filled. */
function sourceBatchesFor(batches: number, config: StreamConfig): number {
  return Math.ceil((batches * config.batchSize) / config.sourceBatchRows) + 2;
}

/** Moves a bad file to quarantine/<task>/ with its reason beside it; the marker that says so is what the fold sees. */
async function quarantine(root: string, task: string, file: string, ready: Extract<StreamTask['input'], { kind: 'watch' }>['ready'], reason: string): Promise<SourceMarker> {
  const marker: SourceMarker = { skipped: { file: path.basename(file), why: 'quarantined' } };
  const dir = path.join(root, task);
  await fs.mkdir(dir, { recursive: true });
  const target = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${path.basename(file)}`);
  if (!(await moveFile(file, target))) {
    logEvent('stream.file_vanished', { task, file: path.basename(file), reason });
    return marker;
  }
  if (ready.kind === 'marker') await fs.rm(file + ready.suffix, { force: true });
  await writeFileAtomic(`${target}.reason.txt`, `${reason}\n`);
  logEvent('stream.quarantined', { task, file: path.basename(file), reason, moved_to: target });
  return marker;
}

/** The job-wide settings a task's statistics were accumulated with: another is a new job. */
export function checkSettings(file: string, task: string, saved: TaskStatistics, config: StreamConfig): void {
  const differs = (what: string, was: unknown, now: unknown): never => {
    throw new UserError(`${file}: task '${task}' was accumulated with ${what} ${String(was)}, the config now says ${String(now)}; use a new 'out' directory`);
  };
  if (isGramStats(saved) !== (config.statistic === 'gram')) differs('the statistic', statisticName(saved), `${config.statistic === 'gram' ? 'gram' : 'mask Fisher'} (merge_method ${config.merge.method})`);
  if (isGramStats(saved)) return;
  if (saved.mode !== config.mode) differs('fisher.mode', saved.mode, config.mode);
  if (saved.mode === 'batch' && saved.batchSize !== config.batchSize) differs('fisher.batch_size', saved.batchSize, config.batchSize);
}

/** How the model differs from the one the statistics were accumulated with, if it does. */
function modelChange(saved: TaskStatistics, modelFingerprint: string, model: LoadedModel): { what: string; was: string; now: string } | undefined {
  if (saved.modelFingerprint !== modelFingerprint) return { what: 'model fingerprint', was: saved.modelFingerprint.slice(0, 12), now: modelFingerprint.slice(0, 12) };
  if (isGramStats(saved)) {
    const [was, now] = [saved.inputs, gramInputs(model)].map((inputs) => inputs.map((i) => `${i.name}:${i.dim}`).join(','));
    return was === now ? undefined : { what: 'the Gram inputs', was: clipped(was!), now: `the model's ${clipped(now!)}` };
  }
  const [was, now] = [saved, model.config].map((s: MaskFisherShape) => `L${s.numLayers} H${s.numHeads} I${s.intermediateSize}`);
  return was === now ? undefined : { what: 'the statistics shape', was: was!, now: `the model's ${now!}` };
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
