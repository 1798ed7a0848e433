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
