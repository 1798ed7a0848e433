import path from 'node:path';
import { setImmediate as yieldToReader } from 'node:timers/promises';
import { tableFromArrays } from 'apache-arrow';
import { concatMap, lastValueFrom, map, tap, type Observable } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { customTask, FlowControl, loadTokenizer, padBatches, parquetSource, releaseCredits, tokenize, type SourceBatch } from '@fisher-merge/data';
import { modelDir, tempDir, writeParquet } from './helpers.ts';

const ROWS = 200_000;
const dir = tempDir();
const file = path.join(dir, 'big.parquet');
writeParquet(
  file,
  tableFromArrays({
    id: Int32Array.from({ length: ROWS }, (_, i) => i),
    text: Array.from({ length: ROWS }, (_, i) => `row ${i % 97} says ${i % 13 === 0 ? 'hello there' : 'hi'}`),
    label: Int32Array.from({ length: ROWS }, (_, i) => i % 2),
  }),
  5_000,
);

/** Counts source batches read but not yet finished by the sink, independently of FlowControl's own count. */
function countInFlight<T>(source: Observable<SourceBatch>, consume: (source: Observable<SourceBatch>) => Observable<T>, finished: (t: T) => number) {
  let inFlight = 0;
  let peak = 0;
  let finishedTotal = 0;
  const run = lastValueFrom(
    consume(source.pipe(tap(() => (peak = Math.max(peak, ++inFlight))))).pipe(
      tap((t) => {
        const n = finished(t);
        inFlight -= n;
        finishedTotal += n;
      }),
    ),
    { defaultValue: undefined },
  );
  return run.then(() => ({ peak, finishedTotal }));
}

describe('credit-based backpressure', () => {
  it('keeps at most `window` source batches in flight while a slow sink consumes 200k rows', async () => {
    const flow = new FlowControl(3);
    let rows = 0;
    let lastId = -1;
    const { peak, finishedTotal } = await countInFlight(
      parquetSource(file, { batchSize: 1_000, flow, columns: ['id'] }),
      (s) =>
        s.pipe(
          concatMap(async (item) => {
            const ids = item.batch.getChild('id')!.toArray() as Int32Array;
            expect(ids[0]).toBe(lastId + 1);
            lastId = ids[ids.length - 1]!;
            rows += ids.length;
            // Give the reader every chance to run ahead before the sink finishes this batch.
            await yieldToReader();
            return 1;
          }),
          releaseCredits(flow, () => 1),
        ),
      (n) => n,
    );
    expect(rows).toBe(ROWS);
    expect(finishedTotal).toBe(ROWS / 1_000);
    expect(peak).toBeLessThanOrEqual(3);
    expect(flow.maxInFlight).toBe(3);
    expect(flow.inFlight).toBe(0);
  });

  it('without flow control the reader runs ahead of a sink that waits for it', async () => {
    let read = 0;
    let ranAhead!: () => void;
    const twentyAhead = new Promise<void>((resolve) => (ranAhead = resolve));
    const source = parquetSource(file, { batchSize: 1_000, columns: ['id'] }).pipe(tap(() => ++read === 21 && ranAhead()));
    // The sink holds its first batch until 20 more were read: with credits this would never happen.
    const { peak } = await countInFlight(source, (s) => s.pipe(
          concatMap(async (_, i) => {
            if (i === 0) await twentyAhead;
            return 1;
          }),
        ), (n) => n);
    expect(peak).toBeGreaterThan(20);
  });

  it('bounds source -> tokenize -> padBatches -> slow sink by the credits model batches carry', async () => {
    const tokenizer = await loadTokenizer(modelDir('sst2'));
    const task = customTask({ textColumn: 'text', labelColumn: 'label', numLabels: 2 });
    const flow = new FlowControl(4);
    const rowIds: number[] = [];
    const { peak, finishedTotal } = await countInFlight(
      parquetSource(file, { batchSize: 500, flow, columns: ['text', 'label'], sample: { kind: 'first', n: 20_000 } }),
      (s) =>
        s.pipe(
          tokenize(tokenizer, task),
          padBatches({ batchSize: 64, padTokenId: tokenizer.padTokenId, flow }),
          concatMap(async (batch) => {
            rowIds.push(...batch.tokens.rowIds!);
            await yieldToReader();
            return batch;
          }),
          releaseCredits(flow),
          map((batch) => batch.completedSources.length),
        ),
      (n) => n,
    );
    expect(rowIds).toEqual([...Array(20_000).keys()]);
    expect(finishedTotal).toBe(40);
    expect(peak).toBeLessThanOrEqual(4);
    expect(flow.inFlight).toBe(0);
  });

  it('fails instead of hanging when the window cannot fill one batch', async () => {
    const tokenizer = await loadTokenizer(modelDir('sst2'));
    const task = customTask({ textColumn: 'text', labelColumn: 'label', numLabels: 2 });
    const flow = new FlowControl(2);
    const run = lastValueFrom(
      parquetSource(file, { batchSize: 10, flow, columns: ['text', 'label'] }).pipe(
        tokenize(tokenizer, task),
        padBatches({ batchSize: 64, padTokenId: tokenizer.padTokenId, flow }),
      ),
    );
    await expect(run).rejects.toThrow('flow-control window of 2 source batches cannot fill 64 rows');
  });
});
