import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { exhaustMapWithTrailing, taskChanges, type StreamTask, type TaskEntry, type TaskSet } from '@fisher-merge/stream-job';

const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

describe('exhaustMapWithTrailing (marbles)', () => {
  it('runs one inner at a time; requests meanwhile collapse into one more run of the latest', () => {
    scheduler().run(({ cold, hot, expectObservable, expectSubscriptions }) => {
      const inner = { a: cold('--x|'), c: cold('--y|'), d: cold('--z|') };
      const source = hot('a-bc----d-|');
      const out = source.pipe(exhaustMapWithTrailing((v) => inner[v as 'a' | 'c' | 'd']));
      // b and c arrive while a runs: only c (the latest) runs after it; d runs on its own.
      expectObservable(out).toBe('--x--y----z|', { x: 'x', y: 'y', z: 'z' });
      expectSubscriptions(inner.a.subscriptions).toBe('^--!');
      expectSubscriptions(inner.c.subscriptions).toBe('---^--!');
    });
  });

  it('completes only after the running and the trailing inner are done', () => {
    scheduler().run(({ cold, hot, expectObservable }) => {
      const source = hot('ab|');
      expectObservable(source.pipe(exhaustMapWithTrailing(() => cold('---x|')))).toBe('---x---x|');
    });
  });

  it('throws in next: a throwing project errors the subscriber', () => {
    scheduler().run(({ hot, expectObservable }) => {
      const failure = new Error('no merge');
      expectObservable(hot('-a').pipe(exhaustMapWithTrailing(() => {
        throw failure;
      }))).toBe('-#', undefined, failure);
    });
  });

  it('source errors and inner errors reach the subscriber', () => {
    scheduler().run(({ cold, hot, expectObservable }) => {
      const failure = new Error('disk full');
      expectObservable(hot('a-#', undefined, failure).pipe(exhaustMapWithTrailing(() => cold('----x|')))).toBe('--#', undefined, failure);
      expectObservable(hot('a|').pipe(exhaustMapWithTrailing(() => cold('-#', undefined, failure)))).toBe('-#', undefined, failure);
    });
  });
});

describe('taskChanges (marbles)', () => {
  it('per name, a new revision joins and a name gone leaves; an unchanged task is no change', () => {
    const entry = (name: string, revision: string): TaskEntry => ({ task: { spec: { name } } as StreamTask, revision });
    const set = (...entries: TaskEntry[]): TaskSet => new Map(entries.map((e) => [e.task.spec.name, e]));
    const [sst2, cola, cola2] = [entry('sst2', '1'), entry('cola', '1'), entry('cola', '2')];
    scheduler().run(({ hot, expectObservable }) => {
      const sets = hot('a-b-c-d---e|', { a: set(sst2), b: set(sst2, cola), c: set(sst2, cola), d: set(cola2), e: set(sst2, cola2) });
      expectObservable(taskChanges(sets)).toBe('a-b---(lc)s|', {
        a: { name: 'sst2', entry: sst2 },
        b: { name: 'cola', entry: cola },
        l: { name: 'sst2', entry: undefined },
        c: { name: 'cola', entry: cola2 },
        s: { name: 'sst2', entry: sst2 },
      });
    });
  });
});
