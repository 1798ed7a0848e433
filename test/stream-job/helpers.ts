import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Table } from 'apache-arrow';
import { lastValueFrom, toArray } from 'rxjs';
import { expect } from 'vitest';
import { stringify } from 'yaml';
import { glueTask, parquetSource, taskColumns } from '@fisher-merge/data';
import type { MaskFisher } from '@fisher-merge/fisher';
import { isGramStats, type TaskStatistics } from '@fisher-merge/stream-job';
import { glueFile, modelDir, writeParquet } from '../data/helpers.ts';

export { modelDir, tempDir } from '../data/helpers.ts';
export const REPO = path.resolve(import.meta.dirname, '../..');

/** The first `rows` training rows of a GLUE task, as one Arrow table of the task's columns. */
export async function taskRows(task: string, rows: number): Promise<Table> {
  const items = await lastValueFrom(parquetSource(glueFile(task, 'train'), { columns: taskColumns(glueTask(task)), sample: { kind: 'first', n: rows } }).pipe(toArray()));
  return new Table(items.map((i) => i.batch)).slice(0, rows);
}

/** Writes a table as one Parquet file the way a careful producer does: a hidden temp name, then rename. */
export function publishParquet(file: string, table: Table, rowGroupRows = 16): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  writeParquet(tmp, table, rowGroupRows);
  renameSync(tmp, file);
}

/** Cuts a table into consecutive parts of the given sizes. */
export function split(table: Table, sizes: readonly number[]): Table[] {
  const parts: Table[] = [];
  let at = 0;
  for (const n of sizes) {
    parts.push(table.slice(at, at + n));
    at += n;
  }
  return parts;
}

export interface TestTask {
  task: string;
  watch: string;
  ready?: 'stable' | 'marker';
  /** Default: the task's fixture model. */
  model?: string;
  lambda?: number;
  /** Validation rows (with a gate). */
  validation?: string;
}

/** A task's statistics that must be mask Fisher (the job's rule is not regmean). */
export function maskFisherOf(stats: TaskStatistics): MaskFisher {
  if (isGramStats(stats)) throw new Error(`task ${stats.task} accumulated Gram sums, not mask Fisher`);
  return stats;
}

/** Mask Fisher statistics equal, bit for bit, to `want` (counts, data fingerprint, every sum). */
export function expectSameStats(stats: TaskStatistics, want: MaskFisher): void {
  const got = maskFisherOf(stats);
  expect(got.examples).toBe(want.examples);
  expect(got.batches).toBe(want.batches);
  expect(got.dataFingerprint).toBe(want.dataFingerprint);
  expect(Array.from(got.head)).toEqual(Array.from(want.head));
  expect(Array.from(got.neuron)).toEqual(Array.from(want.neuron));
}

/** A stream config file for the fixture models; returns its path. */
export function writeStreamConfig(file: string, out: string, tasks: readonly TestTask[], extra: Record<string, unknown> = {}): string {
  const config = {
    out,
    engine: 'onnx',
    fisher: { mode: 'batch', batch_size: 8 },
    source_batch_rows: 16,
    publish: { on_stop: true },
    ...extra,
    tasks: tasks.map((t) => ({
      task: t.task,
      model: t.model ?? modelDir(t.task),
      watch: t.watch,
      ready: t.ready ?? 'stable',
      stable_ms: 0,
      poll_ms: 50,
      ...(t.lambda !== undefined ? { lambda: t.lambda } : {}),
      ...(t.validation !== undefined ? { validation: t.validation } : {}),
    })),
  };
  writeFileSync(file, stringify(config));
  return file;
}
