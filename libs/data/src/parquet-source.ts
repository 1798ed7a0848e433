import { openAsBlob } from 'node:fs';
import { Observable } from 'rxjs';
import { tableFromIPC, type RecordBatch } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { UserError } from '@fisher-merge/core';
import type { FlowControl } from './flow-control.ts';
import { resolveInputFiles } from './inputs.ts';
import { selectRows, type RowSampling } from './row-selection.ts';
import type { SourceBatch } from './source-batch.ts';
import { checkColumns, emptyInputError, emitBatches } from './source-common.ts';

export interface ParquetSourceOptions {
  /** Columns to decode; others are never read. Default: all. */
  columns?: readonly string[];
  /** Rows per emitted batch (row groups are split into batches of at most this many rows). */
  batchSize?: number;
  /** Credits gate reading: one per batch. Without it the source reads ahead freely. */
  flow?: FlowControl;
  /** Read only these rows; row groups without a selected row are skipped undecoded. */
  sample?: RowSampling;
  /** No rows at all is not an error (a file of a watched directory may be empty). */
  allowEmpty?: boolean;
}

export const DEFAULT_SOURCE_BATCH_SIZE = 4096;

interface OpenedFile {
  path: string;
  file: parquet.ParquetFile;
  rowGroupRows: number[];
}

/**
 * Streams Parquet files, directories or globs (in sorted order) as Arrow batches, row group by row
 * group, decoding only the projected columns. Read errors become UserErrors naming the file.
 */
export function parquetSource(inputs: string | readonly string[], options: ParquetSourceOptions = {}): Observable<SourceBatch> {
  const batchSize = options.batchSize ?? DEFAULT_SOURCE_BATCH_SIZE;
  return emitBatches(options.flow, async function* () {
    const paths = await resolveInputFiles(inputs, '.parquet');
    const guard = new DecoderGuard();
    // Footers first: the row count is needed for random sampling and global row ids, and a bad
    // file should fail before any work is done.
    const files: OpenedFile[] = [];
    try {
      for (const path of paths) files.push(await openParquet(path, options.columns));
      const totalRows = files.reduce((sum, f) => sum + f.rowGroupRows.reduce((a, b) => a + b, 0), 0);
      if (totalRows === 0 && !options.allowEmpty) throw emptyInputError(paths);
      const selection = selectRows(options.sample, totalRows, paths.join(', '));
      let rowId = 0;
      for (const { path, file, rowGroupRows } of files) {
        const fileRows = rowGroupRows.reduce((a, b) => a + b, 0);
        let batchIndex = 0;
        let rowOffset = 0;
        for (const [rowGroup, groupRows] of rowGroupRows.entries()) {
          if (selection.exhaustedAt(rowId)) return;
          const groupSelection = selection.pick(rowId, groupRows);
          if (groupSelection !== 'all' && groupSelection.length === 0) {
            // Count the batches this row group would have given, so batch indices do not depend on sampling.
            batchIndex += Math.ceil(groupRows / batchSize);
            rowOffset += groupRows;
            rowId += groupRows;
            continue;
          }
          const stream = await readParquet(path, () => file.stream({ batchSize, rowGroups: [rowGroup], columns: options.columns ? [...options.columns] : undefined }), guard);
          const reader = stream.getReader();
          try {
            for (;;) {
              const next = await readParquet(path, () => reader.read(), guard);
              if (next.done) break;
              const batch = toArrow(path, next.value as parquet.RecordBatch);
              const selected = selection.pick(rowId, batch.numRows);
              yield { batch, selection: selected === 'all' ? undefined : selected, source: { file: path, rowGroup, batchIndex, rowOffset, rowId, numRows: batch.numRows, fileRows } };
              batchIndex++;
              rowOffset += batch.numRows;
              rowId += batch.numRows;
            }
          } finally {
            await reader.cancel().catch(() => undefined);
          }
        }
      }
    } finally {
      guard.release();
      for (const f of files) f.file.free();
    }
  });
}

async function openParquet(path: string, columns: readonly string[] | undefined): Promise<OpenedFile> {
  const file = await readParquet(path, async () => parquet.ParquetFile.fromFile(await openAsBlob(path)));
  try {
    const metadata = file.metadata();
    const rowGroupRows = metadata.rowGroups().map((g) => g.numRows());
    if (columns) checkColumns(path, tableFromIPC(file.schema().intoIPCStream()).schema, columns);
    return { path, file, rowGroupRows };
  } catch (e) {
    file.free();
    throw e;
  }
}

/** Total rows of Parquet inputs, from their footers. */
export async function parquetRowCount(inputs: string | readonly string[]): Promise<number> {
  let total = 0;
  for (const path of await resolveInputFiles(inputs, '.parquet')) {
    const { file, rowGroupRows } = await openParquet(path, undefined);
    file.free();
    total += rowGroupRows.reduce((a, b) => a + b, 0);
  }
  return total;
}

function toArrow(path: string, wasmBatch: parquet.RecordBatch): RecordBatch {
  // IPC is the documented bridge between parquet-wasm's Arrow and apache-arrow (one copy).
  const table = tableFromIPC(wasmBatch.intoIPCStream());
  if (table.batches.length !== 1) throw new Error(`${path}: expected one Arrow batch per Parquet batch, got ${table.batches.length}`);
  return table.batches[0]!;
}

async function readParquet<T>(path: string, read: () => Promise<T> | T, guard?: DecoderGuard): Promise<T> {
  try {
    const result = Promise.resolve().then(read);
    return await (guard ? Promise.race([result, guard.panicked]) : result);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const message = e instanceof Error ? e.message : String(e);
    if ((e as NodeJS.ErrnoException)?.code === 'ENOENT') throw new UserError(`file not found: ${path}`);
    if (e instanceof WasmRuntimeError) throw new UserError(`cannot read Parquet file ${path}: corrupt data (the decoder failed: ${message})`);
    throw new UserError(`cannot read Parquet file ${path}: ${message}`);
  }
}

const WasmRuntimeError = (globalThis as unknown as { WebAssembly: { RuntimeError: new () => Error } }).WebAssembly.RuntimeError;
const openGuards = new Set<DecoderGuard>();

/**
 * parquet-wasm's stream decoder panics on corrupt data pages inside a task of its own, so the panic
 * (a WebAssembly RuntimeError) reaches the process as an uncaught exception instead of rejecting a
 * read. While a source is reading, such a panic rejects its guard, and the source's next read fails
 * with a UserError naming the file; any other exception is re-raised as if no handler were installed.
 */
class DecoderGuard {
  readonly panicked: Promise<never>;
  private fail!: (e: Error) => void;

  constructor() {
    this.panicked = new Promise<never>((_, reject) => (this.fail = reject));
    this.panicked.catch(() => undefined); // observed by the next read, not an unhandled rejection
    if (openGuards.size === 0) process.on('uncaughtException', onUncaught);
    openGuards.add(this);
  }

  static panic(e: Error): void {
    for (const guard of openGuards) guard.fail(e);
  }

  release(): void {
    openGuards.delete(this);
    if (openGuards.size === 0) process.off('uncaughtException', onUncaught);
  }
}

function onUncaught(e: Error): void {
  if (e instanceof WasmRuntimeError) return DecoderGuard.panic(e);
  process.off('uncaughtException', onUncaught);
  setImmediate(() => {
    throw e;
  });
}
