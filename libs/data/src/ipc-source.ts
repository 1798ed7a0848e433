import { promises as fs } from 'node:fs';
import { Observable } from 'rxjs';
import { RecordBatchReader, type RecordBatch } from 'apache-arrow';
import { UserError } from '@fisher-merge/core';
import type { FlowControl } from './flow-control.ts';
import { selectRows, type RowSampling } from './row-selection.ts';
import type { SourceBatch } from './source-batch.ts';
import { checkColumns, emptyInputError, emitBatches } from './source-common.ts';

export interface ArrowIpcSourceOptions {
  /** Columns to keep (IPC decodes whole batches; the others are dropped right away). */
  columns?: readonly string[];
  flow?: FlowControl;
  /** The input's name in messages when it is given as a stream (default `<stdin>`). */
  name?: string;
  /** A stream that ends without rows is not an error (a continual job whose producer sent nothing yet). */
  allowEmpty?: boolean;
  /** First-N only: an IPC stream's length is unknown until its end. */
  sample?: RowSampling;
}

export const STDIN = '-';

/**
 * Streams an Arrow IPC file or stream (format detected from its first bytes) as batches, in the
 * writer's batch sizes. `-` reads stdin; a Node readable stream may be passed directly.
 */
export function arrowIpcSource(input: string | NodeJS.ReadableStream, options: ArrowIpcSourceOptions = {}): Observable<SourceBatch> {
  const name = typeof input !== 'string' ? (options.name ?? '<stdin>') : input === STDIN ? '<stdin>' : input;
  return emitBatches(options.flow, async function* () {
    const selection = selectRows(options.sample, undefined, name);
    const handle = typeof input === 'string' && input !== STDIN ? await openFile(input) : undefined;
    try {
      const stream = typeof input === 'string' ? process.stdin : input;
      const reader = await readIpc(name, async () => (await (handle ? RecordBatchReader.from(handle) : RecordBatchReader.from(stream))).open());
      const batches = reader[Symbol.asyncIterator]();
      let batchIndex = 0;
      let rowOffset = 0;
      for (;;) {
        if (selection.exhaustedAt(rowOffset)) break;
        const next = await readIpc(name, () => batches.next());
        if (next.done) break;
        const batch = project(name, next.value, options.columns);
        const selected = selection.pick(rowOffset, batch.numRows);
        yield { batch, selection: selected === 'all' ? undefined : selected, source: { file: name, batchIndex, rowOffset, rowId: rowOffset, numRows: batch.numRows } };
        batchIndex++;
        rowOffset += batch.numRows;
      }
      if (rowOffset === 0 && !options.allowEmpty) throw emptyInputError([name]);
    } finally {
      await handle?.close();
    }
  });
}

function project(name: string, batch: RecordBatch, columns: readonly string[] | undefined): RecordBatch {
  if (!columns) return batch;
  checkColumns(name, batch.schema, columns);
  return batch.select([...columns]);
}

async function openFile(path: string): Promise<fs.FileHandle> {
  try {
    return await fs.open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`file not found: ${path}`);
    throw new UserError(`cannot open ${path}: ${(e as Error).message}`);
  }
}

async function readIpc<T>(name: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`cannot read Arrow IPC ${name}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
