import { createWriteStream, promises as fs, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { Field, Float32, Int32, Int64, List, makeData, RecordBatch, RecordBatchFileWriter, Schema, Struct, type Data } from 'apache-arrow';
import { concatMap, Observable, type MonoTypeOperatorFunction } from 'rxjs';
import { tempPath, writeError } from '@fisher-merge/core';
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
 * batches in flight, not the file), under a temporary name renamed into place when the source
 * completes: the file appears complete or not at all. Each batch is passed on once it is written
 * (so `releaseCredits` after this gives its credit back), and the output completes after the rename.
 */
export function writeTokenizedArrow(file: string, options: { label?: 'class' | 'regression' } = {}): MonoTypeOperatorFunction<TokenizedRows> {
  return (batches) =>
    new Observable<TokenizedRows>((subscriber) => {
      const target = path.resolve(file);
      const tmp = tempPath(target);
      const schema = tokenizedFileSchema(options.label);
      const writer = new RecordBatchFileWriter();
      // The schema goes first, so a source without rows still makes a valid (empty) file.
      writer.reset(undefined, schema);
      let out: WriteStream | undefined;
      let flushed: Promise<void> | undefined;
      let renamed = false;
      const opened = (async () => {
        await fs.mkdir(path.dirname(target), { recursive: true });
        out = createWriteStream(tmp);
        flushed = finished(writer.toNodeStream().pipe(out));
        flushed.catch(() => undefined); // awaited below; a failure is reported there
      })();
      opened.catch(() => undefined);
      // Stops the file stream (what the writer still holds is dropped with it) and removes the partial file.
      const discard = async (): Promise<void> => {
        out?.destroy();
        await flushed?.catch(() => undefined);
        await fs.rm(tmp, { force: true });
      };
      const fail = (e: unknown): void => void discard().then(() => subscriber.error(writeError(file, e)));
      const writing = batches
        .pipe(
          concatMap(async (item) => {
            await opened;
            writer.write(recordBatch(schema, options.label, item));
            // Let the file stream catch up before taking the next batch.
            if (out!.writableNeedDrain) await once(out!, 'drain');
            return item;
          }),
        )
        .subscribe({
          next: (item) => subscriber.next(item),
          error: fail,
          complete: () => {
            void (async () => {
              await opened;
              writer.finish();
              await flushed;
              await fs.rename(tmp, target);
              renamed = true;
            })().then(() => subscriber.complete(), fail);
          },
        });
      return () => {
        writing.unsubscribe();
        if (!renamed) void discard();
      };
    });
}
