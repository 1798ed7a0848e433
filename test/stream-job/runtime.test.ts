import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { emptyMaskFisher } from '@fisher-merge/fisher';
import { exhaustScanWithTrailing, publishRequests, strongerRequest, type PublishRequest, type TaskProgress } from '@fisher-merge/stream-job';

const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

const stats = emptyMaskFisher({ numLayers: 1, numHeads: 1, intermediateSize: 1 }, { mode: 'batch', batchSize: 1, task: 't', modelFingerprint: 'm' });
const progress = (task: string, kind: 'folded' | 'read'): TaskProgress => ({
  task,
  state: { stats, cursor: { consumed: new Set() }, quarantined: 0, skippedRows: 0 },
  folded: 0,
  buffered: 0,
  event: kind === 'folded' ? { kind, rows: 1, filesDone: [], sourcesDone: 0 } : { kind, rows: 1 },
});

describe('the job runtime in virtual time', () => {
  it('publish requests: one per folded batch, one per interval on the job scheduler, one per trigger; none after the end', () => {
    const s = scheduler();
    s.run(({ hot, expectObservable }) => {
      const updates = hot('-a-r----b----|', { a: progress('sst2', 'folded'), r: progress('sst2', 'read'), b: progress('cola', 'folded') });
      const trigger = hot('------t-------t', { t: 'touch' });
      const end = hot('-------------e');
      // An interval of 4 ms: requests at 4, 8 and 12 ms, then the end (13 ms) stops it.
      const requests = publishRequests(updates, end, { intervalMs: 4, trigger$: trigger, scheduler: s });
      // At 8 ms the batch and the interval come in the same frame; the trigger at 14 ms is past the end.
      expectObservable(requests).toBe('-a--i-t-(bi)i|', {
        a: { kind: 'policy', task: 'sst2' },
        b: { kind: 'policy', task: 'cola' },
        i: { kind: 'interval' },
        t: { kind: 'trigger' },
      });
    });
  });

  it('publishing: one version at a time, each run from the last one; requests meanwhile collapse into the broadest', () => {
    scheduler().run(({ hot, cold, expectObservable }) => {
      const policy = (task?: string): PublishRequest => ({ kind: 'policy', ...(task ? { task } : {}) });
      const requests = hot<PublishRequest>('a-b-ct----p|', { a: policy('sst2'), b: policy('cola'), c: policy('sst2'), t: { kind: 'trigger' }, p: policy('sst2') });
      // A version takes 2 ms to build and names the request it was built for.
      const built = (last: { n: number }, r: PublishRequest) => cold('--v|', { v: { n: last.n + 1, why: r.kind === 'policy' ? `policy ${r.task ?? 'all'}` : r.kind } });
      // c (4 ms) and t (5 ms) arrive while version 2 is built: the trigger, which publishes in more cases, runs next.
      expectObservable(requests.pipe(exhaustScanWithTrailing(built, { n: 0, why: '' }, strongerRequest))).toBe('--x--y--z---w|', {
        x: { n: 1, why: 'policy sst2' },
        y: { n: 2, why: 'policy cola' },
        z: { n: 3, why: 'trigger' },
        w: { n: 4, why: 'policy sst2' },
      });
    });
    expect(strongerRequest({ kind: 'policy', task: 'sst2' }, { kind: 'policy', task: 'cola' })).toEqual({ kind: 'policy' });
    expect(strongerRequest({ kind: 'trigger' }, { kind: 'interval' })).toEqual({ kind: 'trigger' });
    expect(strongerRequest({ kind: 'policy', task: 'sst2' }, { kind: 'interval' })).toEqual({ kind: 'interval' });
  });
});
