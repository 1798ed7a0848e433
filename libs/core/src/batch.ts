/**
 * One model-sized batch of tokenized examples, padded to `seqLen` (the longest in the batch).
 * All matrices are row-major [batchSize, seqLen]. Produced by the data plane, consumed by engines.
 */
export interface TokenBatch {
  batchSize: number;
  seqLen: number;
  inputIds: Int32Array;
  attentionMask: Int32Array;
  tokenTypeIds: Int32Array;
  /** Gold labels [batchSize]: class index (as a float) or regression target. Absent for unlabeled data. */
  labels?: Float32Array;
  /** Position of each example in its source, in source order (file order for Parquet). */
  rowIds?: Float64Array;
}

/** The id ranges a model's embedding tables accept; `label` names where they come from (a config.json). */
export interface TokenLimits {
  vocabSize: number;
  /** 0 when the model has no token-type table (its token type ids are ignored). */
  typeVocabSize: number;
  /** Longest sequence the position table holds, special tokens included. */
  maxTokens: number;
  label: string;
}

/** Some rows of a batch (indices ascending), padded as before: a split of a tokenized data set. */
export function takeRows(batch: TokenBatch, rows: readonly number[]): TokenBatch {
  const S = batch.seqLen;
  const pick = <T extends Int32Array | Float32Array | Float64Array>(a: T, width: number): T => {
    const out = new (a.constructor as new (n: number) => T)(rows.length * width);
    rows.forEach((r, i) => out.set(a.subarray(r * width, (r + 1) * width), i * width));
    return out;
  };
  return {
    batchSize: rows.length,
    seqLen: S,
    inputIds: pick(batch.inputIds, S),
    attentionMask: pick(batch.attentionMask, S),
    tokenTypeIds: pick(batch.tokenTypeIds, S),
    ...(batch.labels ? { labels: pick(batch.labels, 1) } : {}),
    ...(batch.rowIds ? { rowIds: pick(batch.rowIds, 1) } : {}),
  };
}
