import { PassThrough } from 'node:stream';
import parquet, { type ParquetFieldType } from 'parquetjs-lite';
import { UserError, writeFileAtomic } from '@fisher-merge/core';

/** A column: `optional` ones may be null (written as NULL), `repeated` ones hold a list (DuckDB reads `T[]`). */
export type RowsSchema = Record<string, { type: ParquetFieldType; optional?: boolean; repeated?: boolean }>;

/**
 * Writes a small row-oriented table (results, predictions) as a snappy Parquet file, atomically.
 * parquetjs-lite's row API fits this job; it compresses per column (a writer-level option is
 * ignored), its page index is turned off because arrow-rs readers (parquet-wasm, and so our own
 * sources) reject the index it writes, and v1 data pages keep older readers happy. Large or
 * columnar data should go through Arrow instead.
 */
export async function writeRowsParquet(path: string, rows: Iterable<Record<string, unknown>>, schema: RowsSchema): Promise<void> {
  const sink = new PassThrough();
  const chunks: Uint8Array[] = [];
  const collected = (async () => {
    for await (const chunk of sink) chunks.push(chunk as Buffer);
  })();
  const snappy = Object.fromEntries(Object.entries(schema).map(([name, field]) => [name, { ...field, compression: 'SNAPPY' as const }]));
  const writer = await parquet.ParquetWriter.openStream(new parquet.ParquetSchema(snappy), sink, { pageIndex: false, useDataPageV2: false });
  let index = 0;
  for (const row of rows) {
    for (const [name, field] of Object.entries(schema)) {
      if (!field.optional && !field.repeated && (row[name] === undefined || row[name] === null)) throw new UserError(`${path}: row ${index} has no value for required column '${name}'`);
    }
    await writer.appendRow(row);
    index++;
  }
  await writer.close();
  await collected;
  await writeFileAtomic(path, chunks);
}
