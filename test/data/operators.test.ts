import { tableFromArrays } from 'apache-arrow';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '@fisher-merge/core';
import { customTask, FlowControl, loadTokenizer, padBatches, releaseCredits, tokenize, type ModelBatch, type SourceBatch, type TextTokenizer } from '@fisher-merge/data';
import { modelDir } from './helpers.ts';

const task = customTask({ textColumn: 'text', labelColumn: 'label', numLabels: 2 });
let tokenizer: TextTokenizer;
beforeAll(async () => {
  tokenizer = await loadTokenizer(modelDir('sst2'));
});

/** A source batch of `rows` rows whose global row ids start at `rowId`. */
function sourceBatch(rowId: number, rows: number, batchIndex = 0): SourceBatch {
  const batch = tableFromArrays({
    text: Array.from({ length: rows }, (_, i) => `row ${rowId + i} ${'word '.repeat((rowId + i) % 5)}`),
    label: Int32Array.from({ length: rows }, (_, i) => (rowId + i) % 2),
  }).batches[0]!;
  return { batch, source: { file: 'f', batchIndex, rowOffset: rowId, rowId, numRows: rows } };
}

const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
const rowIdsOf = (b: ModelBatch) => Array.from(b.tokens.rowIds!);

describe('padBatches (marbles)', () => {
  it('cuts rows into batches in source order; the last, smaller batch comes at completion', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const source = cold('a-b-c|', { a: sourceBatch(0, 3), b: sourceBatch(3, 3, 1), c: sourceBatch(6, 1, 2) });
      const out = source.pipe(tokenize(tokenizer, task), padBatches({ batchSize: 4, padTokenId: 0 }), map(rowIdsOf));
      expectObservable(out).toBe('--x--(y|)', { x: [0, 1, 2, 3], y: [4, 5, 6] });
    });
  });

  it('each batch names the file rows it holds: runs merged, a batch straddling files split, row selections followed', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const a: SourceBatch = { ...sourceBatch(0, 3), source: { file: 'a', batchIndex: 0, rowOffset: 5, rowId: 0, numRows: 3, fileRows: 8 } };
      // Rows 0 and 2 of b selected: file rows 0 and 2 of 'b', not contiguous.
      const b: SourceBatch = { ...sourceBatch(3, 3), source: { file: 'b', batchIndex: 0, rowOffset: 0, rowId: 3, numRows: 3 }, selection: Int32Array.of(0, 2) };
      const out = cold('ab|', { a, b }).pipe(tokenize(tokenizer, task), padBatches({ batchSize: 4, padTokenId: 0 }), map((batch) => batch.spans));
      expectObservable(out).toBe('-x(y|)', { x: [{ file: 'a', row: 5, rows: 3, fileRows: 8 }, { file: 'b', row: 0, rows: 1 }], y: [{ file: 'b', row: 2, rows: 1 }] });
    });
  });

  it('throws in next: an untokenized batch errors the subscriber instead of escaping as an uncaught exception', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const out = cold('a|', { a: sourceBatch(0, 2) }).pipe(padBatches({ batchSize: 4, padTokenId: 0 }), map(rowIdsOf));
      expectObservable(out).toBe('#', undefined, new Error("padBatches expects tokenized batches (missing 'input_ids'): put tokenize() before it"));
    });
  });

  it('throws at completion: no rows at all is a UserError on the subscriber', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const out = cold('---|').pipe(map(() => sourceBatch(0, 1)), padBatches({ batchSize: 4, padTokenId: 0 }));
      expectObservable(out).toBe('---#', undefined, new UserError('empty dataset: no examples to batch'));
    });
  });

  it('source errors pass through after the batches already cut, without the buffered rows', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const failure = new Error('disk gone');
      const source = cold('a-b-#', { a: sourceBatch(0, 3), b: sourceBatch(3, 3, 1) }, failure);
      expectObservable(source.pipe(tokenize(tokenizer, task), padBatches({ batchSize: 4, padTokenId: 0 }), map(rowIdsOf))).toBe('--x-#', { x: [0, 1, 2, 3] }, failure);
    });
  });

  it('state is per subscription: two subscriptions batch independently', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const batched = cold('ab|', { a: sourceBatch(0, 2), b: sourceBatch(2, 2, 1) }).pipe(tokenize(tokenizer, task), padBatches({ batchSize: 3, padTokenId: 0 }), map(rowIdsOf));
      expectObservable(batched).toBe('-x(y|)', { x: [0, 1, 2], y: [3] });
      expectObservable(batched).toBe('-x(y|)', { x: [0, 1, 2], y: [3] });
    });
  });
});

describe('releaseCredits (marbles)', () => {
  it('gives back each model batch\'s completed source batches as it passes, and errors when more are released than taken', () => {
    scheduler().run(({ cold, expectObservable, flush }) => {
      const flow = new FlowControl(4);
      for (let i = 0; i < 3; i++) void flow.acquire();
      const batch = (n: number) => ({ completedSources: Array.from({ length: n }, () => sourceBatch(0, 1).source) });
      const seen: number[] = [];
      const out = cold('a-b-c|', { a: batch(1), b: batch(2), c: batch(1) }).pipe(releaseCredits(flow), map(() => (seen.push(flow.inFlight), 'x')));
      expectObservable(out).toBe('x-x-#', undefined, new RangeError('cannot release 1 credits: 0 in flight'));
      flush();
      expect(seen).toEqual([2, 0]);
    });
  });
});
