import { concatMap, type OperatorFunction } from 'rxjs';
import type { TokenBatch } from '@fisher-merge/core';
import { flattenWeights, mapWeights, type Engine, type EncoderWeights } from '@fisher-merge/model';
import { addFingerprints, batchFingerprint, EMPTY_DATA_FINGERPRINT } from './mask-fisher.ts';

/** Running full diagonal Fisher sums, in the layout of the model's weights. */
export interface ParameterFisherSums {
  sums: EncoderWeights;
  examples: number;
  dataFingerprint: string;
}

/** Element-wise a + b over every parameter of two EncoderWeights-shaped objects. */
export function addParameterSums(a: EncoderWeights, b: EncoderWeights): EncoderWeights {
  const others = flattenWeights(b);
  let i = 0;
  return mapWeights(a, (x) => {
    const y = others[i++]!;
    return x.map((v, e) => v + y[e]!);
  });
}

/**
 * The classic full-Fisher computation the paper compares with: one unpadded example at a time through
 * the engine (batch size 1), summed. Same result as one batched `parameterFisher` call; slower.
 */
export async function classicParameterFisher(engine: Engine, batch: TokenBatch, mode: 'empirical' | 'expected'): Promise<EncoderWeights> {
  const { seqLen: T } = batch;
  let sums: Float64Array[] | undefined;
  let last: EncoderWeights | undefined;
  for (let b = 0; b < batch.batchSize; b++) {
    let len = T;
    while (len > 1 && batch.attentionMask[b * T + len - 1] === 0) len--;
    const one: TokenBatch = {
      batchSize: 1,
      seqLen: len,
      inputIds: batch.inputIds.slice(b * T, b * T + len),
      attentionMask: batch.attentionMask.slice(b * T, b * T + len),
      tokenTypeIds: batch.tokenTypeIds.slice(b * T, b * T + len),
      ...(batch.labels ? { labels: batch.labels.slice(b, b + 1) } : {}),
    };
    last = await engine.parameterFisher(one, mode);
    const parts = flattenWeights(last);
    sums ??= parts.map((p) => new Float64Array(p.length));
    parts.forEach((p, k) => {
      const s = sums![k]!;
      for (let e = 0; e < p.length; e++) s[e]! += p[e]!;
    });
  }
  if (!sums || !last) throw new Error('classicParameterFisher: empty batch');
  let k = 0;
  return mapWeights(last, () => new Float32Array(sums![k++]!));
}

/** Accumulates per-example squared parameter gradients over labelled batches, batched in the engine or by the classic loop. */
export function accumulateFullFisher<T extends { tokens: TokenBatch }>(
  engine: Engine,
  mode: 'empirical' | 'expected',
  loop: 'batched' | 'classic' = 'batched',
): OperatorFunction<T, { stats: ParameterFisherSums; batch: T }> {
  return (source) => {
    let state: ParameterFisherSums | undefined;
    return source.pipe(
      concatMap(async (item) => {
        const batch = item.tokens;
        const sums = loop === 'batched' ? await engine.parameterFisher(batch, mode) : await classicParameterFisher(engine, batch, mode);
        state = {
          sums: state ? addParameterSums(state.sums, sums) : sums,
          examples: (state?.examples ?? 0) + batch.batchSize,
          dataFingerprint: addFingerprints(state?.dataFingerprint ?? EMPTY_DATA_FINGERPRINT, batchFingerprint(batch)),
        };
        return { stats: state, batch: item };
      }),
    );
  };
}
