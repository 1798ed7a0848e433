import { concatMap, type OperatorFunction } from 'rxjs';
import type { TokenBatch } from '@fisher-merge/core';
import type { Engine, EncoderWeights } from '@fisher-merge/model';
import { addFingerprints, batchFingerprint, EMPTY_DATA_FINGERPRINT } from './mask-fisher.ts';

/** Running full diagonal Fisher sums, in the layout of the model's weights. */
export interface ParameterFisherSums {
  sums: EncoderWeights;
  examples: number;
  dataFingerprint: string;
}

/** Element-wise a + b over every array of two EncoderWeights-shaped objects (b's arrays unchanged). */
export function addParameterSums(a: EncoderWeights, b: EncoderWeights): EncoderWeights {
  const add = (x: unknown, y: unknown): unknown => {
    if (x instanceof Float32Array) return x.map((v, i) => v + (y as Float32Array)[i]);
    if (Array.isArray(x)) return x.map((v, i) => add(v, (y as unknown[])[i]));
    if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, k === 'config' ? v : add(v, (y as Record<string, unknown>)[k])]));
    return x;
  };
  return add(a, b) as EncoderWeights;
}

/** Accumulates the engine's per-example squared parameter gradients over labelled batches. */
export function accumulateFullFisher<T extends { tokens: TokenBatch }>(engine: Engine, mode: 'empirical' | 'expected'): OperatorFunction<T, { stats: ParameterFisherSums; batch: T }> {
  return (source) => {
    let state: ParameterFisherSums | undefined;
    return source.pipe(
      concatMap(async (item) => {
        const batch = item.tokens;
        const sums = await engine.parameterFisher(batch, mode);
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
