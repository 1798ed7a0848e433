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
      let open: () => Promise<RecordBatchReader>;
      if (handle) {
        const { buffer, bytesRead } = await handle.read(Buffer.alloc(IPC_HEAD_BYTES), 0, IPC_HEAD_BYTES, 0);
        checkIpcHead(name, buffer.subarray(0, bytesRead));
        open = () => RecordBatchReader.from(handle);
      } else {
        const checked = await checkedStream(name, stream);
        open = () => RecordBatchReader.from(checked);
      }
      const reader = await readIpc(name, async () => (await open()).open());
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

/** Bytes that tell Arrow IPC data from anything else: a stream's first message prefix, or a file's magic. */
const IPC_HEAD_BYTES = 8;
const FILE_MAGIC = Buffer.from('ARROW1');
/** A message's metadata is a flatbuffer header; a length beyond this is not Arrow but some other bytes. */
const MAX_METADATA_BYTES = 1 << 28;

/**
 * Refuses bytes that are not Arrow IPC before Arrow reads them: it would take their first bytes as a
 * length and fail with a message about sizes. A stream starts with the continuation marker 0xFFFFFFFF
 * and a metadata length; a file with `ARROW1`. Nothing at all is left to the empty-input rules.
 */
function checkIpcHead(name: string, head: Uint8Array): void {
  if (head.length === 0) return;
  const bytes = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (bytes.subarray(0, FILE_MAGIC.length).equals(FILE_MAGIC)) return;
  if (bytes.length === IPC_HEAD_BYTES && bytes.readUInt32LE(0) === 0xffffffff) {
    const length = bytes.readInt32LE(4);
    if (length >= 0 && length <= MAX_METADATA_BYTES) return;
  }
  const shown = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  throw new UserError(`${name}: not Arrow IPC data (it starts with bytes ${shown}; an Arrow IPC stream starts with ff ff ff ff, an Arrow file with "ARROW1")`);
}

/** The stream with its first bytes checked by `checkIpcHead`; they are read ahead and then passed on. */
async function checkedStream(name: string, stream: NodeJS.ReadableStream): Promise<AsyncIterable<Uint8Array>> {
  const chunks = (stream as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let length = 0;
  let done = false;
  while (length < IPC_HEAD_BYTES) {
    const next = await readIpc(name, () => chunks.next());
    if (next.done) {
      done = true;
      break;
    }
    head.push(next.value);
    length += next.value.length;
  }
  checkIpcHead(name, Buffer.concat(head).subarray(0, IPC_HEAD_BYTES));
  return (async function* () {
    yield* head;
    if (done) return;
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      yield next.value;
    }
  })();
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
