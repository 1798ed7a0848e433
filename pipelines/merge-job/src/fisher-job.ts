import { lastValueFrom, tap } from 'rxjs';
import { Progress, type TokenBatch } from '@fisher-merge/core';
import { FlowControl, taskBatches, type ModelBatch, type RowSampling, type TaskSpec, type TextTokenizer } from '@fisher-merge/data';
import { openEngine, type EngineKind } from '@fisher-merge/engines';
import { accumulateFisher, accumulateFullFisher, type FisherMode, type FullFisher, type MaskFisher } from '@fisher-merge/fisher';
import { toHfTensors } from '@fisher-merge/model';
import { loadTaskModel } from './task-model.ts';

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

/** Mask-node Fisher of one fine-tuned model on its task's data (the paper's statistic). */
export async function computeMaskFisher(opts: FisherJobOptions & { mode: FisherMode }): Promise<MaskFisherResult> {
  const { model, tokenizer } = await loadTaskModel(opts.modelDir, opts.task);
  const engine = await openEngine(opts.engine, model.weights);
  const started = performance.now();
  try {
    const { flow, batches, progress } = batchesOf(opts, tokenizer, model.config.padTokenId);
    const last = await lastValueFrom(
      batches.pipe(
        accumulateFisher<ModelBatch>(engine, { mode: opts.mode, task: opts.task.name, modelFingerprint: model.fingerprint }),
        tap(({ batch }) => done(batch, flow, progress)),
      ),
    );
    progress?.finish();
    return { stats: last.stats, seconds: (performance.now() - started) / 1000, engine: engine.name };
  } finally {
    await engine.dispose();
  }
}

export interface FullFisherResult {
  fisher: FullFisher;
  seconds: number;
  engine: string;
}

/** Full diagonal Fisher of every parameter (Matena & Raffel's statistic), named as in the checkpoint. */
export async function computeFullFisher(opts: FisherJobOptions & { mode: 'empirical' | 'expected' }): Promise<FullFisherResult> {
  const { model, tokenizer } = await loadTaskModel(opts.modelDir, opts.task);
  const engine = await openEngine(opts.engine, model.weights);
  const started = performance.now();
  try {
    const { flow, batches, progress } = batchesOf(opts, tokenizer, model.config.padTokenId);
    const last = await lastValueFrom(
      batches.pipe(
        accumulateFullFisher<ModelBatch>(engine, opts.mode),
        tap(({ batch }) => done(batch, flow, progress)),
      ),
    );
    progress?.finish();
    const fisher: FullFisher = {
      mode: opts.mode,
      examples: last.stats.examples,
      task: opts.task.name,
      modelFingerprint: model.fingerprint,
      dataFingerprint: last.stats.dataFingerprint,
      tensors: toHfTensors(model, last.stats.sums),
    };
    return { fisher, seconds: (performance.now() - started) / 1000, engine: engine.name };
  } finally {
    await engine.dispose();
  }
}

function batchesOf(opts: FisherJobOptions, tokenizer: TextTokenizer, padTokenId: number) {
  const flow = new FlowControl(4);
  const sample = sampling(opts);
  const batches = taskBatches(opts.data, {
    task: opts.task,
    tokenizer,
    batchSize: opts.batchSize,
    padTokenId,
    flow,
    ...(sample ? { sample } : {}),
    ...(opts.maxLength ? { maxLength: opts.maxLength } : {}),
  });
  const progress = opts.progressLabel ? new Progress({ label: opts.progressLabel, ...(opts.samples ? { total: opts.samples } : {}) }) : undefined;
  return { flow, batches, progress };
}

function done(batch: { tokens: TokenBatch; completedSources: readonly unknown[] }, flow: FlowControl, progress: Progress | undefined): void {
  flow.release(batch.completedSources.length);
  progress?.add(batch.tokens.batchSize);
}
