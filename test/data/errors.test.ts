import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Float32, Int64, Table, tableFromArrays, Utf8, vectorFromArray, type Vector } from 'apache-arrow';
import { lastValueFrom, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '@fisher-merge/core';
import {
  customTask,
  glueTask,
  loadTokenizer,
  padBatches,
  parquetSource,
  resolveInputFiles,
  taskColumns,
  tokenize,
  type TaskSpec,
  type TextTokenizer,
} from '@fisher-merge/data';
import { glueFile, modelDir, tempDir, writeParquet } from './helpers.ts';

const dir = tempDir();
let tokenizer: TextTokenizer;
beforeAll(async () => {
  tokenizer = await loadTokenizer(modelDir('rte'));
});

function pairTable(columns: { sentence1?: (string | null)[]; sentence2?: (string | null)[]; label?: Vector }): Table {
  const vectors: Record<string, Vector> = {};
  if (columns.sentence1) vectors.sentence1 = vectorFromArray(columns.sentence1, new Utf8());
  if (columns.sentence2) vectors.sentence2 = vectorFromArray(columns.sentence2, new Utf8());
  if (columns.label) vectors.label = columns.label;
  return new Table(vectors);
}

function parquetFile(name: string, table: Table): string {
  const file = path.join(dir, name);
  writeParquet(file, table, 2);
  return file;
}

async function run(file: string, task: TaskSpec = glueTask('rte'), project = true): Promise<unknown> {
  return lastValueFrom(
    parquetSource(file, project ? { columns: taskColumns(task) } : {}).pipe(
      tokenize(tokenizer, task),
      padBatches({ batchSize: 4, padTokenId: tokenizer.padTokenId }),
      toArray(),
    ),
  );
}

async function userError(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UserError);
  return (error as Error).message;
}

const labels = (values: (number | null)[]) => vectorFromArray(values.map((v) => (v === null ? null : BigInt(v))), new Int64());

describe('bad inputs give UserErrors naming the file, column and row', () => {
  it('missing file', async () => {
    const file = path.join(dir, 'nope.parquet');
    expect(await userError(run(file))).toBe(`file not found: ${file}`);
  });

  it('truncated Parquet file', async () => {
    const file = path.join(dir, 'truncated.parquet');
    const bytes = readFileSync(glueFile('rte', 'validation'));
    writeFileSync(file, bytes.subarray(0, bytes.length / 2));
    expect(await userError(run(file))).toMatch(new RegExp(`^cannot read Parquet file ${file}: .*(footer|magic|EOF|eof)`, 'i'));
  });

  it('corrupt data pages behind an intact footer (the decoder panics outside any promise)', async () => {
    const file = path.join(dir, 'corrupt-pages.parquet');
    const bytes = readFileSync(glueFile('sst2', 'validation'));
    for (let i = 2000; i < 2400; i++) bytes[i] = (bytes[i]! * 7 + 13) % 256;
    writeFileSync(file, bytes);
    const task = glueTask('sst2');
    const message = await userError(lastValueFrom(parquetSource(file, { columns: taskColumns(task) }).pipe(tokenize(tokenizer, task), toArray())));
    expect(message).toBe(`cannot read Parquet file ${file}: corrupt data (the decoder failed: unreachable)`);
    // The process stays usable: a good file still reads afterwards.
    const rows = await lastValueFrom(parquetSource(glueFile('sst2', 'validation'), { columns: taskColumns(task) }).pipe(toArray()));
    expect(rows.reduce((n, r) => n + r.batch.numRows, 0)).toBe(872);
  });

  it('a file that is not Parquet', async () => {
    const file = path.join(dir, 'notes.parquet');
    writeFileSync(file, 'sentence1,sentence2,label\nhello,world,0\n');
    expect(await userError(run(file))).toMatch(new RegExp(`^cannot read Parquet file ${file}: `));
  });

  it('missing column, caught by projection and by tokenize', async () => {
    const file = parquetFile('no-pair.parquet', pairTable({ sentence1: ['a'], label: labels([0]) }));
    expect(await userError(run(file))).toBe(`${file}: column 'sentence2' not found (columns: sentence1, label)`);
    expect(await userError(run(file, glueTask('rte'), false))).toBe(`${file}: column 'sentence2' not found, expected a string column (columns: sentence1, label)`);
  });

  it('wrongly typed text and label columns', async () => {
    const numericText = parquetFile('numeric-text.parquet', tableFromArrays({ sentence1: Int32Array.of(1), sentence2: ['b'], label: Int32Array.of(0) }));
    expect(await userError(run(numericText))).toBe(`${numericText}: column 'sentence1' has type Int32, expected a string column (utf8)`);
    const floatLabel = parquetFile('float-label.parquet', pairTable({ sentence1: ['a'], sentence2: ['b'], label: vectorFromArray([0.5], new Float32()) }));
    expect(await userError(run(floatLabel))).toBe(`${floatLabel}: column 'label' has type Float32, expected an integer column (class index)`);
    const textLabel = parquetFile('text-label.parquet', pairTable({ sentence1: ['a'], sentence2: ['b'], label: vectorFromArray(['yes'], new Utf8()) }));
    expect(await userError(run(textLabel, glueTask('stsb')))).toBe(`${textLabel}: column 'label' has type Utf8, expected a numeric column (regression target)`);
  });

  it('null text, with the row counted across row groups', async () => {
    const file = parquetFile('null-text.parquet', pairTable({ sentence1: ['a', 'b', 'c', 'd'], sentence2: ['a', 'b', 'c', null], label: labels([0, 1, 0, 1]) }));
    expect(await userError(run(file))).toBe(`${file}: null in text column 'sentence2' at row 3 (0-based)`);
  });

  it('null label', async () => {
    const file = parquetFile('null-label.parquet', pairTable({ sentence1: ['a', 'b', 'c'], sentence2: ['a', 'b', 'c'], label: labels([0, 1, null]) }));
    expect(await userError(run(file))).toBe(`${file}: label column 'label' at row 2 (0-based) is null`);
  });

  it('out-of-range label (GLUE test splits use -1)', async () => {
    const file = parquetFile('bad-label.parquet', pairTable({ sentence1: ['a', 'b'], sentence2: ['a', 'b'], label: labels([1, -1]) }));
    expect(await userError(run(file))).toBe(`${file}: label column 'label' at row 1 (0-based) is -1, expected a class index in [0, 1]`);
  });

  it('empty dataset', async () => {
    const file = parquetFile('empty.parquet', pairTable({ sentence1: [], sentence2: [], label: labels([]) }));
    expect(await userError(run(file))).toBe(`empty dataset: no rows in ${file}`);
    const emptyDir = path.join(dir, 'empty-dir');
    mkdirSync(emptyDir);
    expect(await userError(run(emptyDir))).toBe(`no .parquet files in directory ${emptyDir}`);
    expect(await userError(run(path.join(dir, 'none-*.parquet')))).toBe(`no files match ${path.join(dir, 'none-*.parquet')}`);
  });

  it('bad task specs and tokenizer directories', async () => {
    expect(() => glueTask('imdb')).toThrow(/unknown task 'imdb'/);
    expect(() => customTask({ textColumn: '' })).toThrow('--text-column must be a non-empty column name, got ""');
    expect(() => customTask({ textColumn: 'a', textPairColumn: 'a' })).toThrow("--text-pair-column must differ from --text-column ('a')");
    expect(() => customTask({ textColumn: 'a', numLabels: 0 })).toThrow('--num-labels must be an integer >= 1, got 0');
    expect(() => customTask({ textColumn: 'a', labelColumn: 'a' })).toThrow("--label-column 'a' is also a text column");
    const noTokenizer = path.join(dir, 'no-tokenizer');
    mkdirSync(noTokenizer);
    expect(await userError(loadTokenizer(noTokenizer))).toBe(`cannot read ${path.join(noTokenizer, 'tokenizer.json')}: file not found`);
  });

  it('a glob over directories expands in sorted order', async () => {
    const nested = path.join(dir, 'glob', 'b');
    mkdirSync(nested, { recursive: true });
    copyFileSync(glueFile('rte', 'validation'), path.join(nested, 'x-1.parquet'));
    copyFileSync(glueFile('rte', 'validation'), path.join(dir, 'glob', 'x-0.parquet'));
    expect(await resolveInputFiles(path.join(dir, 'glob', '**', 'x-?.parquet'), '.parquet')).toEqual([path.join(dir, 'glob', 'b', 'x-1.parquet'), path.join(dir, 'glob', 'x-0.parquet')]);
    expect(await resolveInputFiles(path.join(dir, 'glob'), '.parquet')).toEqual([path.join(dir, 'glob', 'b', 'x-1.parquet'), path.join(dir, 'glob', 'x-0.parquet')]);
  });
});
