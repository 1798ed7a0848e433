import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { Field, Float32, Int32, Int64, List, makeData, RecordBatch, RecordBatchFileWriter, Schema, Struct, type Data } from 'apache-arrow';
import { concatMap, lastValueFrom, type Observable } from 'rxjs';
import { tempPath, UserError } from '@fisher-merge/core';
import { int32ListData } from './tokenize.ts';
import type { TokenizedRows } from './tokenizer-pool.ts';

/** Columns of a tokenized Arrow file: unpadded ids and token types, the label (when read), the source row index. */
export const TOKENIZED_FILE = { inputIds: 'input_ids', tokenTypeIds: 'token_type_ids', label: 'label', row: 'row' } as const;

function tokenizedFileSchema(label: 'class' | 'regression' | undefined): Schema {
  const list = () => new List(new Field('item', new Int32(), false));
  return new Schema([
    new Field(TOKENIZED_FILE.inputIds, list(), false),
    new Field(TOKENIZED_FILE.tokenTypeIds, list(), false),
    ...(label ? [new Field(TOKENIZED_FILE.label, label === 'class' ? new Int32() : new Float32(), false)] : []),
    new Field(TOKENIZED_FILE.row, new Int64(), false),
  ]);
}

function recordBatch(schema: Schema, label: 'class' | 'regression' | undefined, { rows, labels, rowIds }: TokenizedRows): RecordBatch {
  const length = rowIds.length;
  const children: Data[] = [
    int32ListData(rows.ids, rows.offsets),
    int32ListData(rows.typeIds, rows.offsets),
    ...(label && labels ? [label === 'class' ? makeData({ type: new Int32(), length, nullCount: 0, data: Int32Array.from(labels) }) : makeData({ type: new Float32(), length, nullCount: 0, data: labels })] : []),
    makeData({ type: new Int64(), length, nullCount: 0, data: BigInt64Array.from(rowIds, (r) => BigInt(r)) }),
  ];
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }));
}

/**
 * Writes tokenized batches as one Arrow IPC file, batch by batch as they arrive (memory holds the
 * batches in flight, not the file), under a temporary name renamed into place at the end: the file
 * appears complete or not at all. `onWritten` runs after each batch (to release its credit).
 * Resolves with the number of rows written.
 */
export async function writeTokenizedArrow(
  file: string,
  batches: Observable<TokenizedRows>,
  options: { label?: 'class' | 'regression'; onWritten?: (item: TokenizedRows) => void },
): Promise<number> {
  await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = tempPath(path.resolve(file));
  const schema = tokenizedFileSchema(options.label);
  const writer = new RecordBatchFileWriter();
  // The schema goes first, so a source without rows still makes a valid (empty) file.
  writer.reset(undefined, schema);
  const out = createWriteStream(tmp);
  const done = finished(writer.toNodeStream().pipe(out));
  let rows = 0;
  try {
    await lastValueFrom(
      batches.pipe(
        concatMap(async (item) => {
          writer.write(recordBatch(schema, options.label, item));
          rows += item.rowIds.length;
          // Let the file stream catch up before taking the next batch.
          if (out.writableNeedDrain) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
          options.onWritten?.(item);
        }),
      ),
      { defaultValue: undefined },
    );
    writer.finish();
    await done;
    await fs.rename(tmp, file);
  } catch (e) {
    // Stop the file stream; what the writer still holds is dropped with it.
    out.destroy();
    await done.catch(() => undefined);
    await fs.rm(tmp, { force: true });
    throw e instanceof Error && 'code' in e && !(e instanceof UserError) ? new UserError(`${file}: cannot write (${String((e as NodeJS.ErrnoException).code)})`) : e;
  }
  return rows;
}
