import { createHash } from 'node:crypto';
import type { TokenBatch } from '@fisher-merge/core';
import type { MaskGradients } from '@fisher-merge/model';

export type FisherMode = 'batch' | 'example';

/**
 * Running mask-node Fisher statistics of one model on one task. Sums, not means: two accumulations
 * over disjoint data add up to the accumulation over their union (see `addStats`).
 */
export interface MaskFisher {
  mode: FisherMode;
  /** Batch size the batch-mode gradients were taken over (informational in example mode). */
  batchSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  /** sum of squared gradients, [L, H] */
  head: Float64Array;
  /** sum of squared gradients, [L, I] */
  neuron: Float64Array;
  examples: number;
  batches: number;
  task: string;
  /** sha256 of the model's weight files. */
  modelFingerprint: string;
  /** Multiset hash of the consumed examples' token ids and labels (content, not file names). */
  dataFingerprint: string;
}

export interface MaskFisherShape {
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
}

export function emptyMaskFisher(
  shape: MaskFisherShape,
  info: { mode: FisherMode; batchSize: number; task: string; modelFingerprint: string },
): MaskFisher {
  return {
    ...info,
    ...shape,
    head: new Float64Array(shape.numLayers * shape.numHeads),
    neuron: new Float64Array(shape.numLayers * shape.intermediateSize),
    examples: 0,
    batches: 0,
    dataFingerprint: EMPTY_DATA_FINGERPRINT,
  };
}

export const EMPTY_DATA_FINGERPRINT = '0'.repeat(64);
const MOD = 1n << 256n;

/**
 * Fingerprint of a batch's content: the sum mod 2^256 of each example's sha256 over its real token ids
 * and label. A multiset hash, so fingerprints of disjoint parts add up to the fingerprint of the whole
 * however the data was split or batched.
 */
export function batchFingerprint(batch: Pick<TokenBatch, 'batchSize' | 'seqLen' | 'inputIds' | 'attentionMask' | 'labels'>): string {
  let sum = 0n;
  for (let b = 0; b < batch.batchSize; b++) {
    const hash = createHash('sha256');
    const row = batch.inputIds.subarray(b * batch.seqLen, (b + 1) * batch.seqLen);
    const mask = batch.attentionMask.subarray(b * batch.seqLen, (b + 1) * batch.seqLen);
    const real = row.filter((_, t) => mask[t] !== 0);
    hash.update(new Uint8Array(real.buffer, real.byteOffset, real.byteLength));
    if (batch.labels) hash.update(`label:${batch.labels[b]}`);
    sum += BigInt(`0x${hash.digest('hex')}`);
  }
  return (sum % MOD).toString(16).padStart(64, '0');
}

export function addFingerprints(a: string, b: string): string {
  return ((BigInt(`0x${a}`) + BigInt(`0x${b}`)) % MOD).toString(16).padStart(64, '0');
}

/**
 * One batch's share of the statistics: what `addContribution` adds to the running sums. Computed on
 * its own (by a worker, say) it gives bit for bit the sums of an in-process accumulation, because
 * every accumulation adds contributions, in batch order.
 */
export interface FisherContribution {
  head: Float64Array;
  neuron: Float64Array;
  examples: number;
  dataFingerprint: string;
}

/**
 * A batch's contribution from its per-example mask gradients. Batch mode squares the gradient of
 * the batch's mean loss (the mean of the per-example gradients); example mode sums each example's
 * squared gradient.
 */
export function maskFisherContribution(shape: MaskFisherShape, mode: FisherMode, batch: TokenBatch, grads: MaskGradients): FisherContribution {
  const { batchSize } = batch;
  const head = new Float64Array(shape.numLayers * shape.numHeads);
  const neuron = new Float64Array(shape.numLayers * shape.intermediateSize);
  accumulateSquares(head, grads.headGrads, batchSize, mode);
  accumulateSquares(neuron, grads.neuronGrads, batchSize, mode);
  return { head, neuron, examples: batchSize, dataFingerprint: batchFingerprint(batch) };
}

/** The statistics after one more batch; the input is not changed. */
export function addContribution(stats: MaskFisher, c: FisherContribution): MaskFisher {
  if (c.head.length !== stats.head.length || c.neuron.length !== stats.neuron.length) {
    throw new Error(`a Fisher contribution of ${c.head.length} head and ${c.neuron.length} neuron values does not fit statistics of ${stats.head.length} and ${stats.neuron.length}`);
  }
  return {
    ...stats,
    head: stats.head.map((v, k) => v + c.head[k]!),
    neuron: stats.neuron.map((v, k) => v + c.neuron[k]!),
    examples: stats.examples + c.examples,
    batches: stats.batches + 1,
    dataFingerprint: addFingerprints(stats.dataFingerprint, c.dataFingerprint),
  };
}

/** Adds one batch's per-example mask gradients (`maskFisherContribution` then `addContribution`). */
export function addMaskGradients(stats: MaskFisher, batch: TokenBatch, grads: MaskGradients): MaskFisher {
  return addContribution(stats, maskFisherContribution(stats, stats.mode, batch, grads));
}

function accumulateSquares(into: Float64Array, perExample: Float32Array, batchSize: number, mode: FisherMode): void {
  const n = into.length;
  if (perExample.length !== n * batchSize) {
    throw new Error(`mask gradients have ${perExample.length} values, expected ${batchSize} x ${n}`);
  }
  if (mode === 'example') {
    for (let b = 0; b < batchSize; b++) {
      for (let k = 0; k < n; k++) {
        const g = perExample[b * n + k];
        into[k] += g * g;
      }
    }
    return;
  }
  for (let k = 0; k < n; k++) {
    let sum = 0;
    for (let b = 0; b < batchSize; b++) sum += perExample[b * n + k];
    const mean = sum / batchSize;
    into[k] += mean * mean;
  }
}

/** The statistics of the union of two disjoint accumulations of the same model, task and mode. */
export function addStats(a: MaskFisher, b: MaskFisher): MaskFisher {
  for (const key of ['mode', 'numLayers', 'numHeads', 'intermediateSize', 'modelFingerprint', 'task'] as const) {
    if (a[key] !== b[key]) throw new Error(`cannot add Fisher statistics with different ${key}: ${a[key]} vs ${b[key]}`);
  }
  if (a.mode === 'batch' && a.batchSize !== b.batchSize) {
    throw new Error(`cannot add batch-mode Fisher statistics with different batch sizes: ${a.batchSize} vs ${b.batchSize}`);
  }
  return {
    ...a,
    head: a.head.map((v, i) => v + b.head[i]),
    neuron: a.neuron.map((v, i) => v + b.neuron[i]),
    examples: a.examples + b.examples,
    batches: a.batches + b.batches,
    dataFingerprint: addFingerprints(a.dataFingerprint, b.dataFingerprint),
  };
}

/** Exponential forgetting for drifting data: old Fisher mass and counts scaled by `factor` in [0, 1]. */
export function decayStats(stats: MaskFisher, factor: number): MaskFisher {
  return {
    ...stats,
    head: stats.head.map((v) => v * factor),
    neuron: stats.neuron.map((v) => v * factor),
    examples: stats.examples * factor,
    batches: stats.batches * factor,
  };
}
