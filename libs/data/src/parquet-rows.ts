import { PassThrough } from 'node:stream';
import parquet, { type ParquetFieldType } from 'parquetjs-lite';
import { UserError, writeFileAtomic } from '@fisher-merge/core';

export type RowsSchema = Record<string, { type: ParquetFieldType; optional?: boolean }>;

/**
 * Writes a small row-oriented table (results, predictions) as a snappy Parquet file, atomically.
 * parquetjs-lite's row API fits this job; its page index is turned off because arrow-rs readers
 * (parquet-wasm, and so our own sources) reject the index it writes, and v1 data pages keep older
 * readers happy. Large or columnar data should go through Arrow instead.
 */
export async function writeRowsParquet(path: string, rows: Iterable<Record<string, unknown>>, schema: RowsSchema): Promise<void> {
  const sink = new PassThrough();
  const chunks: Uint8Array[] = [];
  const collected = (async () => {
    for await (const chunk of sink) chunks.push(chunk as Buffer);
  })();
  const writer = await parquet.ParquetWriter.openStream(new parquet.ParquetSchema(schema), sink, { compression: 'SNAPPY', pageIndex: false, useDataPageV2: false });
  let index = 0;
  for (const row of rows) {
    for (const [name, field] of Object.entries(schema)) {
      if (!field.optional && (row[name] === undefined || row[name] === null)) throw new UserError(`${path}: row ${index} has no value for required column '${name}'`);
    }
    await writer.appendRow(row);
    index++;
  }
  await writer.close();
  await collected;
  await writeFileAtomic(path, chunks);
}
