import { identity, lastValueFrom, type OperatorFunction } from 'rxjs';
import { reportProgress } from '@fisher-merge/core';
import { expectedRows, FlowControl, releaseCredits, taskBatches, type ModelBatch, type RowSampling, type TaskSpec } from '@fisher-merge/data';
import { openEngine, type EngineKind } from '@fisher-merge/engines';
import { accumulateFisher, accumulateFullFisher, accumulateGrams, gramInputs, type FisherMode, type FullFisher, type GramStats, type MaskFisher } from '@fisher-merge/fisher';
import { modelFingerprint, toHfTensors, type Engine, type LoadedModel } from '@fisher-merge/model';
import { loadTaskModel } from '@fisher-merge/task-model';

export interface FisherJobOptions {
  modelDir: string;
  data: string;
  task: TaskSpec;
  /** Examples to use: the first N in file order, or a seeded random N when `seed` is given. Default: all. */
  samples?: number;
  seed?: number;
  batchSize: number;
  maxLength?: number;
  engine: EngineKind;
  /** Engine threads (default: every core). */
  threads?: number;
  /** Progress meter label; none when undefined. */
  progressLabel?: string;
}

function sampling(opts: FisherJobOptions): RowSampling | undefined {
  if (opts.samples === undefined) return undefined;
  return opts.seed === undefined ? { kind: 'first', n: opts.samples } : { kind: 'random', n: opts.samples, seed: opts.seed };
}

export interface MaskFisherResult {
  stats: MaskFisher;
  seconds: number;
  engine: string;
}

export interface GramResult {
  stats: GramStats;
  seconds: number;
  engine: string;
}

export interface FullFisherResult {
  fisher: FullFisher;
  seconds: number;
  engine: string;
}

/**
 * Streams the task's batches through one accumulating operator on the model's engine, with bounded
 * read-ahead and a progress meter; returns the last statistics it emitted.
 */
async function accumulate<S>(
  opts: FisherJobOptions,
  operator: (engine: Engine, model: LoadedModel) => OperatorFunction<ModelBatch, { stats: S; batch: ModelBatch }>,
): Promise<{ stats: S; model: LoadedModel; fingerprint: string; seconds: number; engine: string }> {
  const { model, tokenizer, task } = await loadTaskModel(opts.modelDir, opts.task, { prefetchFingerprint: true, ...(opts.maxLength ? { maxLength: opts.maxLength } : {}) });
  // Hashed on its own thread while the batches run, not before them; awaited with the last batch.
  const fingerprint = modelFingerprint(model);
  fingerprint.catch(() => undefined); // a failure is reported where it is awaited, unless the job failed first
  const engine = await openEngine(opts.engine, model.weights, { threads: opts.threads });
  const started = performance.now();
  try {
    const flow = new FlowControl(4, { grow: true });
    const sample = sampling(opts);
    const batches = taskBatches(opts.data, {
      task,
      tokenizer,
      batchSize: opts.batchSize,
      padTokenId: model.config.padTokenId,
      flow,
      ...(sample ? { sample } : {}),
      ...(opts.maxLength ? { maxLength: opts.maxLength } : {}),
    });
    const total = opts.progressLabel ? await expectedRows(opts.data, sample) : undefined;
    const last = await lastValueFrom(
      batches.pipe(
        operator(engine, model),
        releaseCredits(flow),
        opts.progressLabel ? reportProgress({ label: opts.progressLabel, ...(total !== undefined ? { total } : {}) }, ({ batch }) => batch.tokens.batchSize) : identity,
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    return { stats: last.stats, model, fingerprint: await fingerprint, seconds, engine: engine.name };
  } finally {
    await engine.dispose();
  }
}

/** Mask-node Fisher of one fine-tuned model on its task's data (the paper's statistic). */
export async function computeMaskFisher(opts: FisherJobOptions & { mode: FisherMode }): Promise<MaskFisherResult> {
  // The fingerprint is known only once its hash thread is done: recorded after the last batch.
  const { stats, fingerprint, seconds, engine } = await accumulate(opts, (e) =>
    accumulateFisher<ModelBatch>(e, { mode: opts.mode, task: opts.task.name, modelFingerprint: '' }));
  return { stats: { ...stats, modelFingerprint: fingerprint }, seconds, engine };
}

/** Full diagonal Fisher of every parameter (Matena & Raffel's statistic), named as in the checkpoint. */
export async function computeFullFisher(opts: FisherJobOptions & { mode: 'empirical' | 'expected'; loop?: 'batched' | 'classic' }): Promise<FullFisherResult> {
  const { stats, model, fingerprint, seconds, engine } = await accumulate(opts, (e) => accumulateFullFisher<ModelBatch>(e, opts.mode, opts.loop));
  const fisher: FullFisher = {
    mode: opts.mode,
    examples: stats.examples,
    task: opts.task.name,
    modelFingerprint: fingerprint,
    dataFingerprint: stats.dataFingerprint,
    tensors: toHfTensors(model, stats.sums),
  };
  return { fisher, seconds, engine };
}

/** Input Gram sums of the linears RegMean merges (shared/docs/method.md section 7), in float64. */
export async function computeGrams(opts: FisherJobOptions): Promise<GramResult> {
  const { stats, fingerprint, seconds, engine } = await accumulate(opts, (e, model) => accumulateGrams<ModelBatch>(e, gramInputs(model), { task: opts.task.name, modelFingerprint: '' }));
  return { stats: { ...stats, modelFingerprint: fingerprint }, seconds, engine };
}
