import { concatMap, map, scan, type OperatorFunction } from 'rxjs';
import type { TokenBatch } from '@fisher-merge/core';
import type { Engine } from '@fisher-merge/model';
import { addContribution, decayStats, emptyMaskFisher, maskFisherContribution, type FisherContribution, type FisherMode, type MaskFisher } from './mask-fisher.ts';

export interface AccumulateFisherOptions {
  mode: FisherMode;
  task: string;
  modelFingerprint: string;
  /** Statistics to continue from (a restarted or continual job). */
  initial?: MaskFisher;
  /** Examples after which old Fisher mass counts half (see `decayFisher`); none by default. */
  decayHalfLife?: number;
}

/** The running statistics after one more batch, and that batch (its source positions let a job checkpoint). */
export interface FisherUpdate<T> {
  stats: MaskFisher;
  batch: T;
}

/** A batch with its contribution (mask Fisher unless said), and the factor that scales the statistics before it is added. */
export interface ContributedBatch<T, C = FisherContribution> {
  batch: T;
  contribution: C;
  decay?: number;
}

/**
 * A batch for which no contribution will come (a queue dead-lettered it): a job moves its cursor
 * over the batch's rows and records them as skipped, never folded and never read again.
 */
export interface DeadBatch<T> {
  batch: T;
  dead: { reason: string };
}

/** One labelled batch through the model's mask-gradient pass, into its contribution (in process or on a queue worker). */
export async function computeContribution(engine: Engine, mode: FisherMode, tokens: TokenBatch): Promise<FisherContribution> {
  if (!tokens.labels) throw new Error('mask Fisher needs labelled batches');
  return maskFisherContribution(engine.config, mode, tokens, await engine.maskGradients(tokens));
}

/** Runs each labelled batch through the model's mask-gradient pass, one at a time, into its contribution. */
export function maskFisherContributions<T extends { tokens: TokenBatch }>(engine: Engine, mode: FisherMode): OperatorFunction<T, ContributedBatch<T>> {
  return concatMap(async (batch) => ({ batch, contribution: await computeContribution(engine, mode, batch.tokens) }));
}

/**
 * Exponential forgetting for drifting data: before each batch is added, the statistics so far are
 * scaled by 0.5^(batch examples / half-life), so old mass counts half after `halfLife` examples.
 */
export function decayFisher<T>(halfLife: number | undefined): OperatorFunction<ContributedBatch<T>, ContributedBatch<T>> {
  if (!halfLife) return (source) => source;
  return map((item) => ({ ...item, decay: 0.5 ** (item.contribution.examples / halfLife) }));
}

/**
 * Folds contributions, in arrival order, into running statistics and emits them after every batch.
 * A `scan`: the statistics are per subscription, so a pipeline subscribed twice counts each pass once.
 */
export function foldFisher<T>(start: (first: ContributedBatch<T>) => MaskFisher): OperatorFunction<ContributedBatch<T>, FisherUpdate<T>> {
  return (source) =>
    source.pipe(
      scan<ContributedBatch<T>, FisherUpdate<T> | undefined>((last, item) => {
        const before = last?.stats ?? start(item);
        const decayed = item.decay === undefined || item.decay === 1 ? before : decayStats(before, item.decay);
        return { stats: addContribution(decayed, item.contribution), batch: item.batch };
      }, undefined),
      map((update) => update!),
    );
}

/**
 * Runs each batch through the model's mask-gradient pass and emits the running Fisher statistics
 * after every batch. In batch mode each incoming batch is one Fisher batch, so the batching upstream
 * decides the paper's batch size.
 */
export function accumulateFisher<T extends { tokens: TokenBatch }>(engine: Engine, opts: AccumulateFisherOptions): OperatorFunction<T, FisherUpdate<T>> {
  const { numLayers, numHeads, intermediateSize } = engine.config;
  return (source) =>
    source.pipe(
      maskFisherContributions(engine, opts.mode),
      decayFisher(opts.decayHalfLife),
      foldFisher((first) => opts.initial ?? emptyMaskFisher({ numLayers, numHeads, intermediateSize }, { mode: opts.mode, batchSize: first.batch.tokens.batchSize, task: opts.task, modelFingerprint: opts.modelFingerprint })),
    );
}
