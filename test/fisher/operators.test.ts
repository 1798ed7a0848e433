import { lastValueFrom, map, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { glueTask, taskBatches } from '@fisher-merge/data';
import { openEngine } from '@fisher-merge/engines';
import { accumulateFisher, decayFisher, emptyMaskFisher, foldFisher, type ContributedBatch, type FisherContribution } from '@fisher-merge/fisher';
import { loadTaskModel } from '@fisher-merge/task-model';
import { modelFingerprint } from '@fisher-merge/model';
import { glueFile, modelDir } from '../data/helpers.ts';

describe('accumulateFisher', () => {
  it('keeps its running statistics per subscription: the same pipeline subscribed twice counts each pass once', async () => {
    const task = glueTask('sst2');
    const { model, tokenizer } = await loadTaskModel(modelDir('sst2'), task);
    const engine = await openEngine('onnx', model.weights);
    try {
      const batches = taskBatches(glueFile('sst2', 'train'), { task, tokenizer, batchSize: 8, padTokenId: model.config.padTokenId, sample: { kind: 'first', n: 24 } });
      const running = batches.pipe(accumulateFisher(engine, { mode: 'batch', task: 'sst2', modelFingerprint: await modelFingerprint(model) }));
      const first = await lastValueFrom(running.pipe(toArray()));
      const second = await lastValueFrom(running.pipe(toArray()));
      expect(first.map((u) => u.stats.examples)).toEqual([8, 16, 24]);
      expect(second.map((u) => u.stats.examples)).toEqual([8, 16, 24]);
      expect(Array.from(second.at(-1)!.stats.head)).toEqual(Array.from(first.at(-1)!.stats.head));
    } finally {
      await engine.dispose();
    }
  });
});

const shape = { numLayers: 1, numHeads: 2, intermediateSize: 1 };
const start = () => emptyMaskFisher(shape, { mode: 'example', batchSize: 2, task: 't', modelFingerprint: 'm' });
const contribution = (h: number, examples = 2): ContributedBatch<string> => ({
  batch: `b${h}`,
  contribution: { head: Float64Array.of(h, 2 * h), neuron: Float64Array.of(h), examples, dataFingerprint: '0'.repeat(63) + '1' } satisfies FisherContribution,
});
const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
const summary = (u: { stats: { head: Float64Array; examples: number; batches: number; dataFingerprint: string }; batch: string }) => ({ batch: u.batch, head: Array.from(u.stats.head), examples: u.stats.examples, batches: u.stats.batches, fp: u.stats.dataFingerprint.slice(-1) });

describe('foldFisher and decayFisher (marbles)', () => {
  it('folds contributions in arrival order, one update per batch; each subscription starts from its own statistics', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const folded = cold('a-b|', { a: contribution(1), b: contribution(3) }).pipe(foldFisher(start), map(summary));
      const expected = { x: { batch: 'b1', head: [1, 2], examples: 2, batches: 1, fp: '1' }, y: { batch: 'b3', head: [4, 8], examples: 4, batches: 2, fp: '2' } };
      expectObservable(folded).toBe('x-y|', expected);
      expectObservable(folded).toBe('x-y|', expected);
    });
  });

  it('decay scales the statistics so far before each batch is added', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const folded = cold('ab|', { a: contribution(4), b: contribution(2) }).pipe(decayFisher(2), foldFisher(start), map(summary));
      // Half-life 2 examples, batches of 2: the first batch counts half when the second is added.
      expectObservable(folded).toBe('xy|', { x: { batch: 'b4', head: [4, 8], examples: 2, batches: 1, fp: '1' }, y: { batch: 'b2', head: [4, 8], examples: 3, batches: 1.5, fp: '2' } });
    });
  });

  it('throws in next: a contribution of the wrong shape errors the subscriber', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const bad = { ...contribution(1), contribution: { ...contribution(1).contribution, head: Float64Array.of(1) } };
      expectObservable(cold('ab|', { a: contribution(1), b: bad }).pipe(foldFisher(start), map(summary))).toBe('x#', { x: { batch: 'b1', head: [1, 2], examples: 2, batches: 1, fp: '1' } },
        new Error('a Fisher contribution of 1 head and 1 neuron values does not fit statistics of 2 and 1'));
    });
  });

  it('source errors reach the subscriber after the updates so far', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const failure = new Error('worker lost');
      expectObservable(cold('a-#', { a: contribution(1) }, failure).pipe(foldFisher(start), map(summary))).toBe('x-#', { x: { batch: 'b1', head: [1, 2], examples: 2, batches: 1, fp: '1' } }, failure);
    });
  });
});
