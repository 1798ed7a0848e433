import type { TokenBatch } from '@fisher-merge/core';
import type { EncoderConfig } from './types.ts';

/** Position ids [B, T] for a batch, following the family's rule (Hugging Face semantics). */
export function positionIds(config: Pick<EncoderConfig, 'positionStyle' | 'padTokenId'>, batch: TokenBatch): Int32Array {
  const { batchSize: B, seqLen: T, inputIds } = batch;
  const out = new Int32Array(B * T);
  if (config.positionStyle === 'absolute') {
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) out[b * T + t] = t;
    return out;
  }
  // RoBERTa's create_position_ids_from_input_ids: cumulative count of non-pad tokens, offset by padding_idx.
  const pad = config.padTokenId;
  for (let b = 0; b < B; b++) {
    let count = 0;
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      if (inputIds[i] !== pad) {
        count++;
        out[i] = count + pad;
      } else out[i] = pad;
    }
  }
  return out;
}
