import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { tableToIPC, type Table } from 'apache-arrow';
import * as parquet from 'parquet-wasm';

export { tempDir } from '../support.ts';

export function writeParquet(file: string, table: Table, rowGroupSize: number): void {
  const properties = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).setMaxRowGroupSize(rowGroupSize).build();
  writeFileSync(file, parquet.writeParquet(parquet.Table.fromIPCStream(tableToIPC(table, 'stream')), properties));
}

export const REPO = path.resolve(import.meta.dirname, '../..');
export const glueFile = (task: string, split: 'train' | 'validation'): string => path.join(REPO, 'data/glue', task, `${split}-00000-of-00001.parquet`);
export const modelDir = (task: string): string => path.join(REPO, 'data/models', task);
