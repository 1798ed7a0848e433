import { concatMap, type OperatorFunction } from 'rxjs';
import type { TokenBatch } from '@fisher-merge/core';
import type { Engine } from '@fisher-merge/model';
import { addMaskGradients, emptyMaskFisher, type FisherMode, type MaskFisher } from './mask-fisher.ts';

export interface AccumulateFisherOptions {
  mode: FisherMode;
  task: string;
  modelFingerprint: string;
  /** Statistics to continue from (a restarted or continual job). */
  initial?: MaskFisher;
}

/** The running statistics after one more batch, and that batch (its source positions let a job checkpoint). */
export interface FisherUpdate<T> {
  stats: MaskFisher;
  batch: T;
}

/**
 * Runs each batch through the model's mask-gradient pass and emits the running Fisher statistics
 * after every batch. In batch mode each incoming batch is one Fisher batch, so the batching upstream
 * decides the paper's batch size.
 */
export function accumulateFisher<T extends { tokens: TokenBatch }>(engine: Engine, opts: AccumulateFisherOptions): OperatorFunction<T, FisherUpdate<T>> {
  return (source) => {
    let stats: MaskFisher | undefined = opts.initial;
    return source.pipe(
      concatMap(async (batch) => {
        const { tokens } = batch;
        if (!tokens.labels) throw new Error('accumulateFisher needs labelled batches');
        stats ??= emptyMaskFisher(
          { numLayers: engine.config.numLayers, numHeads: engine.config.numHeads, intermediateSize: engine.config.intermediateSize },
          { mode: opts.mode, batchSize: tokens.batchSize, task: opts.task, modelFingerprint: opts.modelFingerprint },
        );
        stats = addMaskGradients(stats, tokens, await engine.maskGradients(tokens));
        return { stats, batch };
      }),
    );
  };
}
