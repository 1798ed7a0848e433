import type { RecordBatch } from 'apache-arrow';

/** Where a batch came from, precise enough for a streaming job to checkpoint what it consumed. */
export interface SourcePosition {
  /** File path as given after glob/directory expansion, or `<stdin>`. */
  file: string;
  /** Parquet row group the batch was read from (absent for Arrow IPC). */
  rowGroup?: number;
  /** Index of the batch among the batches read from `file` (counts batches skipped by sampling too). */
  batchIndex: number;
  /** Row index within `file` of the batch's first row. */
  rowOffset: number;
  /** Row index across all inputs, in input order, of the batch's first row. */
  rowId: number;
  /** Rows in the batch as read, before any row selection. */
  numRows: number;
  /** Rows of the whole file, where its footer says (Parquet); absent for a stream, whose end is unknown. */
  fileRows?: number;
}

/**
 * The unit every data operator consumes and emits: an Arrow batch plus its source position.
 * `selection` (ascending row indices into `batch`) marks the rows kept by sampling; absent = all rows.
 */
export interface SourceBatch {
  batch: RecordBatch;
  source: SourcePosition;
  selection?: Int32Array;
}

/** Number of rows of a source batch that downstream operators see. */
export function selectedRowCount(item: SourceBatch): number {
  return item.selection ? item.selection.length : item.batch.numRows;
}
