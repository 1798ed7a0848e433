// Valid inputs are read: Parquet with tiny row groups at the default batch size, tensors over 2 GiB.
import { closeSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { tableFromArrays } from 'apache-arrow';
import { lastValueFrom, map, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { customTask, FlowControl, loadTokenizer, taskBatches } from '@fisher-merge/data';
import { writeParquet } from '../data/helpers.ts';
import { tempDir } from '../support.ts';
import { cli, modelDir } from './support.ts';

const SENTENCES = Array.from({ length: 70 }, (_, i) => `sentence number ${i} is ${i % 3 === 0 ? 'good' : 'bad'}`);

describe('flow-control windows size themselves', () => {
  it('a Parquet file with 4-row row groups is read at batch 32 (the window grows to fill a batch)', async () => {
    const file = path.join(tempDir(), 'tiny-groups.parquet');
    writeParquet(file, tableFromArrays({ sentence: SENTENCES, label: Int32Array.from(SENTENCES, (_, i) => i % 2) }), 4);
    const tokenizer = await loadTokenizer(modelDir('sst2'));
    const flow = new FlowControl(4, { grow: true });
    const sizes = await lastValueFrom(taskBatches(file, { task: customTask({ textColumn: 'sentence' }), tokenizer, batchSize: 32, padTokenId: 0, flow }).pipe(
      map((b) => {
        flow.release(b.completedSources.length);
        return b.tokens.batchSize;
      }),
      toArray(),
    ));
    expect(sizes).toEqual([32, 32, 6]);
    // Never more than one batch of 4-row groups plus the read-ahead in flight.
    expect(flow.maxInFlight).toBeLessThanOrEqual(32 / 4 + 4);
    const run = cli(['predict', '--model', modelDir('sst2'), '--data', file, '--task', 'sst2']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.trimEnd().split('\n')).toHaveLength(70);
  });
});

describe('tensors over 2 GiB', () => {
  it('are read in chunks (one readSync cannot read more than 2^31-1 bytes)', () => {
    // A sparse file: the header, then 2^31 + 8 bytes of which only the last 8 are written.
    const n = 2 ** 31 + 8;
    const header = Buffer.from(JSON.stringify({ big: { dtype: 'U8', shape: [n], data_offsets: [0, n] } }));
    const file = path.join(tempDir(), 'big.safetensors');
    const fd = openSync(file, 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    writeSync(fd, len, 0, 8, 0);
    writeSync(fd, header, 0, header.length, 8);
    writeSync(fd, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]), 0, 8, 8 + header.length + n - 8);
    closeSync(fd);
    const data = readSafetensors(file).tensor('big').data as Uint8Array;
    expect(data.length).toBe(n);
    expect(Array.from(data.subarray(n - 9))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });
});
