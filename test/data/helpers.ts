import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { tableToIPC, type Table } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { afterAll } from 'vitest';

/** A temporary directory removed after the test file. */
export function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'fisher-merge-data-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function writeParquet(file: string, table: Table, rowGroupSize: number): void {
  const properties = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).setMaxRowGroupSize(rowGroupSize).build();
  writeFileSync(file, parquet.writeParquet(parquet.Table.fromIPCStream(tableToIPC(table, 'stream')), properties));
}

export const REPO = path.resolve(import.meta.dirname, '../..');
export const glueFile = (task: string, split: 'train' | 'validation'): string => path.join(REPO, 'data/glue', task, `${split}-00000-of-00001.parquet`);
export const modelDir = (task: string): string => path.join(REPO, 'data/models', task);
