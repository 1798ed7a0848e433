import { UserError, type TokenBatch, type TokenLimits } from '@fisher-merge/core';
import { positionIds } from './positions.ts';
import type { EncoderConfig } from './types.ts';

/** The ids a model's embedding tables accept (RoBERTa-style positions start after the pad id). */
export function tokenLimits(config: EncoderConfig, label: string): TokenLimits {
  const offset = config.positionStyle === 'padding-offset' ? config.padTokenId + 1 : 0;
  return { vocabSize: config.vocabSize, typeVocabSize: config.typeVocabSize, maxTokens: Math.max(0, config.maxPositions - offset), label };
}

function firstOutside(values: Int32Array, size: number): number {
  for (let i = 0; i < values.length; i++) if (values[i]! < 0 || values[i]! >= size) return i;
  return -1;
}

/** A UserError unless every id, token type and position of the batch lies inside its embedding table. */
export function checkTokenBatch(config: EncoderConfig, batch: TokenBatch, label = 'the model'): void {
  const { batchSize: B, seqLen: T } = batch;
  if (batch.inputIds.length !== B * T || batch.tokenTypeIds.length !== B * T || batch.attentionMask.length !== B * T) {
    throw new UserError(`a batch of ${B}x${T} tokens does not hold ${B * T} ids, token types and mask values`);
  }
  const where = (i: number) => `example ${Math.floor(i / T)} of a batch, token ${i % T}`;
  let i = firstOutside(batch.inputIds, config.vocabSize);
  if (i >= 0) throw new UserError(`${where(i)}: id ${batch.inputIds[i]} is outside the embedding table of ${label} (vocab_size ${config.vocabSize})`);
  if (config.typeVocabSize > 0) {
    i = firstOutside(batch.tokenTypeIds, config.typeVocabSize);
    if (i >= 0) throw new UserError(`${where(i)}: token type ${batch.tokenTypeIds[i]} is outside the token-type table of ${label} (type_vocab_size ${config.typeVocabSize})`);
  }
  const positions = positionIds(config, batch);
  i = firstOutside(positions, config.maxPositions);
  if (i >= 0) throw new UserError(`${where(i)}: position ${positions[i]} is outside the position table of ${label} (max_position_embeddings ${config.maxPositions}); use a shorter max length`);
}

/**
 * The largest encoder a statistic file may describe: far beyond any BERT-family model (BERT-large
 * has 24 layers, 16 heads and 4,096 FFN neurons per layer; the largest published transformers stay
 * under 128 layers, 128 heads and 65,536 neurons), so a shape past these is a corrupt or hostile
 * file, and refusing it bounds every array and drawing sized from it.
 */
export const ENCODER_LIMITS = { numLayers: 512, numHeads: 512, intermediateSize: 131_072 } as const;
