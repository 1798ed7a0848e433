import { createReadStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { RecordBatch, Table, tableFromArrays, tableToIPC } from 'apache-arrow';
import { lastValueFrom, take, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import {
  arrowIpcSource,
  FlowControl,
  glueTask,
  loadTokenizer,
  padBatches,
  parquetRowCount,
  parquetSource,
  sampleIds,
  taskColumns,
  tokenize,
  type ModelBatch,
  writeRowsParquet,
  type SourceBatch,
} from '@fisher-merge/data';
import { glueFile, modelDir, tempDir, writeParquet } from './helpers.ts';

const dir = tempDir();
const collect = <T>(o: import('rxjs').Observable<T>): Promise<T[]> => lastValueFrom(o.pipe(toArray()));
const ids = (items: SourceBatch[], column = 'id'): number[] => items.flatMap((item) => {
  const values = Array.from(item.batch.getChild(column)!.toArray() as Int32Array);
  return item.selection ? Array.from(item.selection, (i) => values[i]!) : values;
});

/** Three files of 10 rows in row groups of 4: ids 0..29 across the files. */
function threeFiles(): string[] {
  return [0, 1, 2].map((f) => {
    const file = path.join(dir, `part-${f}.parquet`);
    writeParquet(file, tableFromArrays({ id: Int32Array.from({ length: 10 }, (_, i) => f * 10 + i), text: Array.from({ length: 10 }, (_, i) => `t${f * 10 + i}`) }), 4);
    return file;
  });
}

describe('sources', () => {
  it('Parquet batches carry file, row group, batch index and row offsets across files', async () => {
    const files = threeFiles();
    const items = await collect(parquetSource(path.join(dir, 'part-*.parquet'), { batchSize: 3, columns: ['id'] }));
    expect(ids(items)).toEqual([...Array(30).keys()]);
    expect(items.every((i) => i.batch.schema.fields.map((f) => f.name).join() === 'id')).toBe(true);
    // Row groups of 4 rows split into batches of at most 3: 3+1, 3+1, 2 per file.
    expect(items.slice(0, 6).map((i) => i.source)).toEqual([
      { file: files[0], rowGroup: 0, batchIndex: 0, rowOffset: 0, rowId: 0, numRows: 3, fileRows: 10 },
      { file: files[0], rowGroup: 0, batchIndex: 1, rowOffset: 3, rowId: 3, numRows: 1, fileRows: 10 },
      { file: files[0], rowGroup: 1, batchIndex: 2, rowOffset: 4, rowId: 4, numRows: 3, fileRows: 10 },
      { file: files[0], rowGroup: 1, batchIndex: 3, rowOffset: 7, rowId: 7, numRows: 1, fileRows: 10 },
      { file: files[0], rowGroup: 2, batchIndex: 4, rowOffset: 8, rowId: 8, numRows: 2, fileRows: 10 },
      { file: files[1], rowGroup: 0, batchIndex: 0, rowOffset: 0, rowId: 10, numRows: 3, fileRows: 10 },
    ]);
    expect(await parquetRowCount(dir + '/part-*.parquet')).toBe(30);
  });

  it('first-N stops early and a seeded random sample repeats, in source order, whatever the batch size', async () => {
    const pattern = path.join(dir, 'part-*.parquet');
    threeFiles();
    expect(ids(await collect(parquetSource(pattern, { batchSize: 3, sample: { kind: 'first', n: 5 } })))).toEqual([0, 1, 2, 3, 4]);
    const sampleA = ids(await collect(parquetSource(pattern, { batchSize: 3, sample: { kind: 'random', n: 7, seed: 42 } })));
    const sampleB = ids(await collect(parquetSource(pattern, { batchSize: 8, sample: { kind: 'random', n: 7, seed: 42 } })));
    const sampleC = ids(await collect(parquetSource(pattern, { batchSize: 3, sample: { kind: 'random', n: 7, seed: 7 } })));
    expect(sampleA).toEqual(sampleB);
    expect(sampleA).toEqual(Array.from(sampleIds(30, 7, 42)));
    expect(new Set(sampleA).size).toBe(7);
    expect([...sampleA].sort((a, b) => a - b)).toEqual(sampleA);
    expect(sampleC).not.toEqual(sampleA);
  });

  it('unsubscribing stops reading and hands back unused credits', async () => {
    threeFiles();
    // A window wider than what is taken: a source reading on after the unsubscribe would take the third credit.
    const flow = new FlowControl(3);
    const taken = await collect(parquetSource(path.join(dir, 'part-*.parquet'), { batchSize: 3, flow }).pipe(take(2)));
    expect(ids(taken)).toEqual([0, 1, 2, 3]);
    // The two batches taken hold their credits; the unsubscribed source took none for a batch it did not deliver.
    expect([flow.inFlight, flow.maxInFlight]).toEqual([2, 2]);
    flow.release(2);
    expect(flow.inFlight).toBe(0);
  });

  it('Arrow IPC stream from a readable (stdin-like) and IPC file from a path', async () => {
    const table = tableFromArrays({ id: Int32Array.from({ length: 25 }, (_, i) => i), text: Array.from({ length: 25 }, (_, i) => `row ${i}`) });
    const chunked = new Table([0, 10, 20].map((start) => table.slice(start, start + 10).batches[0]!) as RecordBatch[]);
    const streamBytes = tableToIPC(chunked, 'stream');
    const stdin = new PassThrough();
    stdin.end(Buffer.from(streamBytes));
    const fromStream = await collect(arrowIpcSource(stdin, { columns: ['id'] }));
    expect(ids(fromStream)).toEqual([...Array(25).keys()]);
    expect(fromStream.map((i) => i.source)).toEqual([
      { file: '<stdin>', batchIndex: 0, rowOffset: 0, rowId: 0, numRows: 10 },
      { file: '<stdin>', batchIndex: 1, rowOffset: 10, rowId: 10, numRows: 10 },
      { file: '<stdin>', batchIndex: 2, rowOffset: 20, rowId: 20, numRows: 5 },
    ]);

    const ipcFile = path.join(dir, 'table.arrow');
    writeFileSync(ipcFile, tableToIPC(chunked, 'file'));
    expect(ids(await collect(arrowIpcSource(ipcFile, { sample: { kind: 'first', n: 12 } })))).toEqual([...Array(12).keys()]);
    const streamFile = path.join(dir, 'table.arrows');
    writeFileSync(streamFile, streamBytes);
    expect(ids(await collect(arrowIpcSource(createReadStream(streamFile))))).toEqual([...Array(25).keys()]);
    await expect(collect(arrowIpcSource(path.join(dir, 'missing.arrow')))).rejects.toThrow(`file not found: ${path.join(dir, 'missing.arrow')}`);
    await expect(collect(arrowIpcSource(ipcFile, { sample: { kind: 'random', n: 3, seed: 1 } }))).rejects.toThrow('a random sample needs the row count up front');
  });
});

describe('batching', () => {
  async function sst2Batches(options: Parameters<typeof padBatches>[0]['bucket']): Promise<ModelBatch[]> {
    const task = glueTask('sst2');
    const tokenizer = await loadTokenizer(modelDir('sst2'));
    return collect(
      parquetSource(glueFile('sst2', 'validation'), { columns: taskColumns(task), batchSize: 50, sample: { kind: 'first', n: 300 } }).pipe(
        tokenize(tokenizer, task),
        padBatches({ batchSize: 16, padTokenId: tokenizer.padTokenId, ...(options ? { bucket: options } : {}) }),
      ),
    );
  }

  it('fixed-size batches in source order, padded to the longest row, last one smaller', async () => {
    const batches = await sst2Batches(undefined);
    expect(batches.map((b) => b.tokens.batchSize)).toEqual([...Array(18).fill(16), 12]);
    expect(batches.flatMap((b) => Array.from(b.tokens.rowIds!))).toEqual([...Array(300).keys()]);
    for (const { tokens } of batches) {
      const lengths = Array.from({ length: tokens.batchSize }, (_, r) => tokens.attentionMask.subarray(r * tokens.seqLen, (r + 1) * tokens.seqLen).reduce((a, b) => a + b, 0));
      expect(Math.max(...lengths)).toBe(tokens.seqLen);
    }
    // Each source batch of 50 rows completes in the model batch holding its last row.
    const expected = batches.map((_, k) => [0, 50, 100, 150, 200, 250].filter((first) => Math.floor((first + 49) / 16) === k));
    expect(batches.map((b) => b.completedSources.map((s) => s.rowId))).toEqual(expected);
  });

  it('length bucketing sorts within the window and repeats for a seed', async () => {
    const bucketed = await sst2Batches({ windowBatches: 4, seed: 3 });
    const again = await sst2Batches({ windowBatches: 4, seed: 3 });
    const plain = await sst2Batches(undefined);
    const rows = (bs: ModelBatch[]) => bs.map((b) => Array.from(b.tokens.rowIds!));
    expect(rows(bucketed)).toEqual(rows(again));
    expect(rows(bucketed).flat().sort((a, b) => a - b)).toEqual([...Array(300).keys()]);
    const padding = (bs: ModelBatch[]) => bs.reduce((n, b) => n + b.tokens.batchSize * b.tokens.seqLen, 0);
    expect(padding(bucketed)).toBeLessThan(padding(plain) * 0.8);
    // Each window of 64 rows holds exactly the same rows as the first 64 of the plain order.
    expect(rows(bucketed).slice(0, 4).flat().sort((a, b) => a - b)).toEqual([...Array(64).keys()]);
    expect(bucketed.flatMap((b) => b.completedSources.map((s) => s.rowId))).toEqual([0, 50, 100, 150, 200, 250]);
  });
});

describe('writeRowsParquet (parquetjs-lite)', () => {
  it('writes a small result table that our Parquet source reads back', async () => {
    const file = path.join(dir, 'results.parquet');
    const rows = [
      { task: 'sst2', examples: 872, accuracy: 0.789, note: null },
      { task: 'rte', examples: 277, accuracy: 0.563, note: 'weak' },
    ];
    await writeRowsParquet(file, rows, { task: { type: 'UTF8' }, examples: { type: 'INT64' }, accuracy: { type: 'DOUBLE' }, note: { type: 'UTF8', optional: true } });
    const [item] = await collect(parquetSource(file));
    expect(item!.batch.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual(['task:Utf8', 'examples:Int64', 'accuracy:Float64', 'note:Utf8']);
    expect(item!.batch.toArray().map((r) => ({ ...r.toJSON(), examples: Number(r.examples) }))).toEqual(rows);
    await expect(writeRowsParquet(file, [{ task: 'x' }], { task: { type: 'UTF8' }, examples: { type: 'INT64' } })).rejects.toThrow(`${file}: row 0 has no value for required column 'examples'`);
  });

  it('writes list columns as Parquet lists: a NULL list stays NULL, an empty one stays empty', async () => {
    const file = path.join(dir, 'lists.parquet');
    const rows = [{ task: 'own', lambdas: null }, { task: 'merged', lambdas: [1, 0.5] }, { task: 'none', lambdas: [] }];
    await writeRowsParquet(file, rows, { task: { type: 'UTF8' }, lambdas: { type: 'DOUBLE', list: true, optional: true } });
    const [item] = await collect(parquetSource(file));
    expect(item!.batch.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual(['task:Utf8', 'lambdas:List<Float64>']);
    const lambdas = item!.batch.getChild('lambdas')!;
    expect(Array.from({ length: rows.length }, (_, i) => lambdas.get(i)?.toArray() ?? null).map((v) => (v ? Array.from(v as Float64Array) : v))).toEqual(rows.map((r) => r.lambdas));
    await expect(writeRowsParquet(file, [{ task: 'x', lambdas: 1 }], { task: { type: 'UTF8' }, lambdas: { type: 'DOUBLE', list: true } })).rejects.toThrow(`${file}: row 0 has 1 in list column 'lambdas', expected an array`);
  });
});
