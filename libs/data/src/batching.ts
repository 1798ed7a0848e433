import { Observable, type OperatorFunction } from 'rxjs';
import type { Data, Float32, Float64, Int32, List, RecordBatch } from 'apache-arrow';
import { SeededRandom, UserError, type TokenBatch } from '@fisher-merge/core';
import type { FlowControl } from './flow-control.ts';
import type { SourceBatch, SourcePosition } from './source-batch.ts';
import { TOKENIZED } from './tokenize.ts';

/** Rows [row, row + rows) of `file`; `fileRows` when the file's length is known (see SourcePosition). */
export interface RowSpan {
  file: string;
  row: number;
  rows: number;
  fileRows?: number;
}

/** A padded model batch plus the source batches whose last rows it carries (release that many credits). */
export interface ModelBatch {
  tokens: TokenBatch;
  /** Source batches fully consumed once this batch is done, in source order: a checkpoint resumes after the last. */
  completedSources: SourcePosition[];
  /** The file rows this batch holds, in batch order, contiguous runs merged: what a job's cursor moves over once it is counted. */
  spans: RowSpan[];
}

export interface PadBatchesOptions {
  batchSize: number;
  padTokenId: number;
  /**
   * Length bucketing: collect `windowBatches` batches' worth of rows, sort them by length (ties in
   * source order), cut into batches and emit those in an order shuffled by `seed`.
   */
  bucket?: { windowBatches: number; seed: number };
  /** The source's flow control, to fail (not hang) when its window cannot fill a batch. */
  flow?: FlowControl;
  /** No rows at all is not an error (a continual job's source that has not sent anything yet). */
  allowEmpty?: boolean;
}

/** Columns of one tokenized batch, read once. */
interface TokenizedColumns {
  offsets: Int32Array;
  ids: Int32Array;
  typeIds: Int32Array;
  labels?: Float32Array;
  rowIds: Float64Array;
  pending: PendingSource;
}

interface PendingSource {
  position: SourcePosition;
  rowsLeft: number;
}

interface RowRef {
  columns: TokenizedColumns;
  row: number;
}

/**
 * Groups tokenized rows into fixed-size `TokenBatch`es padded to the longest row in each batch (the
 * paper's collator), in source order unless bucketing is on. The last batch may be smaller.
 * Completes with a UserError if no rows arrived at all.
 */
export function padBatches(options: PadBatchesOptions): OperatorFunction<SourceBatch, ModelBatch> {
  const { batchSize, padTokenId, bucket, flow } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new UserError(`batch size must be an integer >= 1, got ${batchSize}`);
  if (bucket && (!Number.isInteger(bucket.windowBatches) || bucket.windowBatches < 1)) {
    throw new UserError(`bucketing window must be an integer >= 1 batches, got ${bucket.windowBatches}`);
  }
  const rowsPerWindow = batchSize * (bucket?.windowBatches ?? 1);

  return (input) =>
    new Observable<ModelBatch>((subscriber) => {
      const random = bucket ? new SeededRandom(bucket.seed) : undefined;
      const pending: PendingSource[] = [];
      let buffered: RowRef[] = [];
      let seenRows = 0;

      const emit = (rows: RowRef[]): void => {
        const tokens = pad(rows, padTokenId);
        for (const { columns } of rows) columns.pending.rowsLeft--;
        const completedSources: SourcePosition[] = [];
        while (pending.length > 0 && pending[0]!.rowsLeft === 0) completedSources.push(pending.shift()!.position);
        subscriber.next({ tokens, completedSources, spans: spansOf(rows) });
      };

      const release = (rows: RowRef[]): void => {
        if (bucket) {
          // Stable sort: equal lengths keep source order, so the result depends on the seed only.
          rows.sort((a, b) => rowLength(a) - rowLength(b));
          const batches: RowRef[][] = [];
          for (let i = 0; i < rows.length; i += batchSize) batches.push(rows.slice(i, i + batchSize));
          for (const b of random!.shuffle(batches)) emit(b);
        } else {
          for (let i = 0; i < rows.length; i += batchSize) emit(rows.slice(i, i + batchSize));
        }
      };

      // Callbacks handed to subscribe() must not throw (RxJS would report it as an uncaught
      // exception): failures go to the subscriber, as in RxJS's own operators.
      const guarded = <A extends unknown[]>(body: (...args: A) => void) => (...args: A): void => {
        try {
          body(...args);
        } catch (e) {
          subscriber.error(e);
        }
      };

      return input.subscribe({
        next: guarded((item: SourceBatch) => {
          const columns = readColumns(item);
          const numRows = columns.offsets.length - 1;
          pending.push(columns.pending);
          seenRows += numRows;
          for (let row = 0; row < numRows; row++) buffered.push({ columns, row });
          if (buffered.length >= rowsPerWindow) {
            const ready = buffered.slice(0, buffered.length - (buffered.length % rowsPerWindow));
            buffered = buffered.slice(ready.length);
            release(ready);
          }
          // Every credit is held by a source batch waiting here for more rows: nothing can arrive.
          if (flow && pending.length >= flow.window && !flow.widen()) {
            throw new UserError(`flow-control window of ${flow.window} source batches cannot fill ${rowsPerWindow} rows (have ${buffered.length}); raise the window, let it grow, or raise the source batch size`);
          }
        }),
        error: (e: unknown) => subscriber.error(e),
        complete: guarded(() => {
          if (seenRows === 0 && !options.allowEmpty) throw new UserError('empty dataset: no examples to batch');
          release(buffered);
          buffered = [];
          subscriber.complete();
        }),
      });
    });
}

function readColumns(item: SourceBatch): TokenizedColumns {
  const { batch, source } = item;
  const list = (name: string): Data<List<Int32>> => {
    const data = childData(batch, name) as Data<List<Int32>> | undefined;
    if (!data) throw new Error(`padBatches expects tokenized batches (missing '${name}'): put tokenize() before it`);
    return data;
  };
  const ids = list(TOKENIZED.inputIds);
  const typeIds = list(TOKENIZED.tokenTypeIds);
  const labels = childData(batch, TOKENIZED.label) as Data<Float32> | undefined;
  const rowIds = childData(batch, TOKENIZED.rowId) as Data<Float64>;
  const offsets = ids.valueOffsets.subarray(ids.offset, ids.offset + ids.length + 1);
  return {
    offsets,
    ids: listValues(ids),
    typeIds: listValues(typeIds),
    ...(labels ? { labels: labels.values.subarray(labels.offset, labels.offset + labels.length) } : {}),
    rowIds: rowIds.values.subarray(rowIds.offset, rowIds.offset + rowIds.length),
    pending: { position: source, rowsLeft: batch.numRows },
  };
}

function listValues(list: Data<List<Int32>>): Int32Array {
  const child = list.children[0] as Data<Int32>;
  return child.values.subarray(child.offset);
}

function childData(batch: RecordBatch, name: string): Data | undefined {
  const index = batch.schema.fields.findIndex((f) => f.name === name);
  return index < 0 ? undefined : batch.data.children[index];
}

function spansOf(rows: readonly RowRef[]): RowSpan[] {
  const spans: RowSpan[] = [];
  for (const { columns, row } of rows) {
    const { file, rowOffset, rowId, fileRows } = columns.pending.position;
    // row_id is the source's global row id: its distance from the batch's first names the file row, selections included.
    const fileRow = rowOffset + columns.rowIds[row]! - rowId;
    const last = spans.at(-1);
    if (last && last.file === file && last.row + last.rows === fileRow) last.rows++;
    else spans.push({ file, row: fileRow, rows: 1, ...(fileRows !== undefined ? { fileRows } : {}) });
  }
  return spans;
}

function rowLength({ columns, row }: RowRef): number {
  return columns.offsets[row + 1]! - columns.offsets[row]!;
}

function pad(rows: RowRef[], padTokenId: number): TokenBatch {
  const batchSize = rows.length;
  const seqLen = rows.reduce((max, r) => Math.max(max, rowLength(r)), 0);
  const inputIds = new Int32Array(batchSize * seqLen).fill(padTokenId);
  const attentionMask = new Int32Array(batchSize * seqLen);
  const tokenTypeIds = new Int32Array(batchSize * seqLen);
  const labeled = rows.every((r) => r.columns.labels);
  const labels = labeled ? new Float32Array(batchSize) : undefined;
  const rowIds = new Float64Array(batchSize);
  rows.forEach(({ columns, row }, i) => {
    const start = columns.offsets[row]!;
    const end = columns.offsets[row + 1]!;
    inputIds.set(columns.ids.subarray(start, end), i * seqLen);
    tokenTypeIds.set(columns.typeIds.subarray(start, end), i * seqLen);
    attentionMask.fill(1, i * seqLen, i * seqLen + end - start);
    if (labels) labels[i] = columns.labels![row]!;
    rowIds[i] = columns.rowIds[row]!;
  });
  return { batchSize, seqLen, inputIds, attentionMask, tokenTypeIds, ...(labels ? { labels } : {}), rowIds };
}
