import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { giveUpAfter, whileQuiet } from '@fisher-merge/queue';

const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

describe('whileQuiet: the repair clock (marbles)', () => {
  it('ticks every period while nothing happens, and each value starts the period again', () => {
    scheduler().run(({ hot, expectObservable }) => {
      // Folds at 2 and 4 push the first tick to 4 + 3; quiet from then, it ticks every 3.
      const folds = hot('--a-b---------');
      expectObservable(folds.pipe(whileQuiet(3)), '^------------!').toBe('-------x--y--', { x: 0, y: 1 });
    });
  });

  it('a source that keeps folding faster than the period never ticks', () => {
    scheduler().run(({ hot, expectObservable }) => {
      expectObservable(hot('-a-a-a-a-a-a').pipe(whileQuiet(3)), '^----------!').toBe('-----------');
    });
  });
});

describe('giveUpAfter: the give-up on a lost connection (marbles)', () => {
  const failure = new Error('lost Redis for 5 s');
  it('errors once the connection stays lost for the timeout', () => {
    scheduler().run(({ hot, expectObservable }) => {
      expectObservable(giveUpAfter(hot('-l'), hot('--'), 5, () => failure, undefined)).toBe('------#', undefined, failure);
    });
  });

  it('a reconnection in time cancels it; a later loss is timed afresh, and repeated losses while timing change nothing', () => {
    scheduler().run(({ hot, expectObservable }) => {
      // Lost at 1 (and again at 3: still timing from 1), back at 4; lost at 8 (and 10), never back: 8 + 5.
      const lost = hot('-l-l----l-l---');
      const back = hot('----r---------');
      expectObservable(giveUpAfter(lost, back, 5, () => failure)).toBe('-------------#', undefined, failure);
    });
  });
});
