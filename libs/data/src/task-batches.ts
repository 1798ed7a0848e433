import type { Observable } from 'rxjs';
import { FlowControl } from './flow-control.ts';
import { arrowIpcSource } from './ipc-source.ts';
import { parquetRowCount, parquetSource } from './parquet-source.ts';
import type { RowSampling } from './row-selection.ts';
import type { SourceBatch } from './source-batch.ts';
import { taskColumns, type TaskSpec } from './tasks.ts';
import { padBatches, type ModelBatch } from './batching.ts';
import { tokenize } from './tokenize.ts';
import type { TextTokenizer } from './tokenizer.ts';

/** Arrow IPC by extension or `-` (stdin); anything else is read as Parquet (file, directory or glob). */
export function isArrowIpcInput(data: string): boolean {
  return data === '-' || /\.(arrow|arrows|ipc|feather)$/i.test(data);
}

/** Rows a source will yield, when known before reading it (Parquet footers; an IPC stream only through its limit): a progress total. */
export async function expectedRows(data: string, sample?: RowSampling): Promise<number | undefined> {
  const rows = isArrowIpcInput(data) ? undefined : await parquetRowCount(data);
  if (!sample) return rows;
  return rows === undefined ? sample.n : Math.min(rows, sample.n);
}

export interface TaskSourceOptions {
  columns: readonly string[];
  flow?: FlowControl;
  sample?: RowSampling;
  batchSize?: number;
}

/** A Parquet or Arrow IPC input (chosen from the path) as source batches. */
export function openTaskSource(data: string, options: TaskSourceOptions): Observable<SourceBatch> {
  return isArrowIpcInput(data) ? arrowIpcSource(data, options) : parquetSource(data, options);
}

export interface TaskBatchesOptions {
  task: TaskSpec;
  tokenizer: TextTokenizer;
  batchSize: number;
  padTokenId: number;
  maxLength?: number;
  /** Read the label column (default true). */
  labels?: boolean;
  sample?: RowSampling;
  /** Source batches in flight; the consumer releases `completedSources.length` credits per model batch. */
  flow?: FlowControl;
}

/** Data file -> tokenized, padded model batches of one task, in source order: the input side of every job. */
export function taskBatches(data: string, options: TaskBatchesOptions): Observable<ModelBatch> {
  const labels = options.labels ?? true;
  const source = openTaskSource(data, {
    columns: taskColumns(options.task, { labels }),
    ...(options.flow ? { flow: options.flow } : {}),
    ...(options.sample ? { sample: options.sample } : {}),
  });
  return source.pipe(
    tokenize(options.tokenizer, options.task, { labels, ...(options.maxLength ? { maxLength: options.maxLength } : {}) }),
    padBatches({ batchSize: options.batchSize, padTokenId: options.padTokenId, ...(options.flow ? { flow: options.flow } : {}) }),
  );
}
