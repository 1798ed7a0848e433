import { PassThrough } from 'node:stream';
import parquet, { type ParquetField, type ParquetFieldType } from 'parquetjs-lite';
import { shown, UserError, writeFileAtomic } from '@fisher-merge/core';

/** A column: `optional` ones may be null (written as NULL); `list` ones hold an array of `type` (DuckDB reads `T[]`). */
export type RowsSchema = Record<string, { type: ParquetFieldType; optional?: boolean; list?: boolean }>;

/**
 * parquetjs-lite's field for a column: a list is the standard three-level LIST group (optional group,
 * repeated `list`, `element`), the layout readers map to a nullable list, so a NULL list stays NULL.
 */
function parquetField(field: RowsSchema[string]): ParquetField {
  const leaf = { type: field.type, compression: 'SNAPPY' as const };
  if (!field.list) return { ...leaf, optional: field.optional ?? false };
  return { type: 'LIST', optional: field.optional ?? false, fields: { list: { repeated: true, fields: { element: leaf } } } };
}

/** A row's values as parquetjs-lite's writer takes them: list columns as the LIST group's records. */
function parquetRow(row: Record<string, unknown>, schema: RowsSchema): Record<string, unknown> {
  const out = { ...row };
  for (const [name, field] of Object.entries(schema)) {
    const v = row[name];
    if (field.list && Array.isArray(v)) out[name] = { list: v.map((element: unknown) => ({ element })) };
  }
  return out;
}

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
  const fields = Object.fromEntries(Object.entries(schema).map(([name, field]) => [name, parquetField(field)]));
  const writer = await parquet.ParquetWriter.openStream(new parquet.ParquetSchema(fields), sink, { pageIndex: false, useDataPageV2: false });
  let index = 0;
  for (const row of rows) {
    for (const [name, field] of Object.entries(schema)) {
      const v = row[name];
      if (!field.optional && (v === undefined || v === null)) throw new UserError(`${path}: row ${index} has no value for required column '${name}'`);
      if (field.list && v !== undefined && v !== null && !Array.isArray(v)) throw new UserError(`${path}: row ${index} has ${shown(v)} in list column '${name}', expected an array`);
    }
    await writer.appendRow(parquetRow(row, schema));
    index++;
  }
  await writer.close();
  await collected;
  await writeFileAtomic(path, chunks);
}
