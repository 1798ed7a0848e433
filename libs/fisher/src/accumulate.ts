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
  /** Called after each batch's gradients are accumulated (progress, flow-control credits). */
  onBatch?: (batch: TokenBatch, stats: MaskFisher) => void;
}

/**
 * Runs each batch through the model's mask-gradient pass and emits the running Fisher statistics
 * after every batch. In batch mode each incoming batch is one Fisher batch, so the batching upstream
 * decides the paper's batch size.
 */
export function accumulateFisher(engine: Engine, opts: AccumulateFisherOptions): OperatorFunction<TokenBatch, MaskFisher> {
  return (source) => {
    let stats: MaskFisher | undefined = opts.initial;
    return source.pipe(
      concatMap(async (batch) => {
        if (!batch.labels) throw new Error('accumulateFisher needs labelled batches');
        stats ??= emptyMaskFisher(
          { numLayers: engine.config.numLayers, numHeads: engine.config.numHeads, intermediateSize: engine.config.intermediateSize },
          { mode: opts.mode, batchSize: batch.batchSize, task: opts.task, modelFingerprint: opts.modelFingerprint },
        );
        stats = addMaskGradients(stats, batch, await engine.maskGradients(batch));
        opts.onBatch?.(batch, stats);
        return stats;
      }),
    );
  };
}
