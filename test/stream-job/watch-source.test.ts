import { appendFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { VirtualTimeScheduler } from 'rxjs';
import { DirectoryWatcher, schedulerClock, tailFile, type ModelBatch } from '@fisher-merge/data';
import { emptyGramStats, emptyMaskFisher, type FisherContribution, type GramContribution } from '@fisher-merge/fisher';
import { advanceCursor, foldTaskItem, type StreamGrams, type TaskProgress, type TaskStatistics } from '@fisher-merge/stream-job';
import { VirtualClock } from '../support.ts';
import { maskFisherOf, tempDir } from './helpers.ts';

/** Steps a virtual clock in `step` ms increments until `done` settles; returns the virtual time it settled at. */
async function stepUntil(clock: VirtualClock, step: number, done: Promise<unknown>, limit = 1000): Promise<number> {
  let settled = false;
  void done.then(() => (settled = true), () => (settled = true));
  for (let i = 0; i < limit; i++) {
    await Promise.race([clock.sleeping(), done]);
    if (settled) return clock.time;
    clock.advance(step);
  }
  throw new Error(`not settled after ${limit} steps of ${step} virtual ms`);
}

describe('DirectoryWatcher (virtual time)', () => {
  it('stable rule: a file that keeps growing is not handed out until it stopped changing for `ms`; hidden and other names never', async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, '.hidden.parquet'), 'x');
    writeFileSync(path.join(dir, 'b.parquet.tmp'), 'x');
    const growing = path.join(dir, 'a.parquet');
    writeFileSync(growing, 'x');
    const clock = new VirtualClock();
    const watcher = new DirectoryWatcher(dir, { ready: { kind: 'stable', ms: 300 }, pollMs: 20, idleMs: 200, clock });
    const next = watcher.next();
    // Grows at virtual times 0..500; each poll sees the change.
    for (let i = 0; i < 6; i++) {
      await clock.sleeping();
      appendFileSync(growing, 'more');
      clock.advance(100);
    }
    const lastChangeSeenAt = clock.time;
    const handedAt = await stepUntil(clock, 20, next);
    expect(await next).toBe(growing);
    expect(handedAt - lastChangeSeenAt).toBeGreaterThanOrEqual(300);
    expect(handedAt - lastChangeSeenAt).toBeLessThan(300 + 2 * 20);
    // Nothing else ever becomes ready: idle after 200 virtual ms.
    const idle = watcher.next();
    const from = clock.time;
    const idleAt = await stepUntil(clock, 20, idle);
    expect(await idle).toBeUndefined();
    expect(idleAt - from).toBeGreaterThanOrEqual(200);
    expect(watcher.backlog).toBe(0);
  });

  it('marker rule: ready once <file>.done exists, lowest name first; ignored files are skipped', async () => {
    const dir = tempDir();
    for (const n of ['c', 'a', 'b']) writeFileSync(path.join(dir, `${n}.parquet`), 'x');
    const clock = new VirtualClock();
    const watcher = new DirectoryWatcher(dir, { ready: { kind: 'marker', suffix: '.done' }, pollMs: 20, idleMs: 5000, clock, ignore: (f) => f.endsWith('a.parquet') });
    const abort = new AbortController();
    const first = watcher.next(abort.signal);
    await clock.sleeping();
    expect(watcher.backlog).toBe(2);
    writeFileSync(path.join(dir, 'c.parquet.done'), '');
    writeFileSync(path.join(dir, 'b.parquet.done'), '');
    clock.advance(20);
    expect(path.basename((await first)!)).toBe('b.parquet');
    expect(path.basename((await watcher.next())!)).toBe('c.parquet');
    const waiting = watcher.next(abort.signal);
    await clock.sleeping();
    abort.abort();
    expect(await waiting).toBeUndefined();
  });
});

describe('schedulerClock', () => {
  it("runs a watcher's polls and idle time on the job's RxJS scheduler (virtual time here)", async () => {
    const scheduler = new VirtualTimeScheduler();
    const watcher = new DirectoryWatcher(tempDir(), { ready: { kind: 'stable', ms: 0 }, pollMs: 20, idleMs: 200, clock: schedulerClock(scheduler) });
    let settled = false;
    const next = watcher.next().finally(() => (settled = true));
    // Each flush runs the poll the watcher is sleeping on (none while it lists the directory).
    while (!settled) {
      await new Promise((resolve) => setImmediate(resolve));
      scheduler.flush();
    }
    expect(await next).toBeUndefined();
    expect(scheduler.now()).toBeGreaterThanOrEqual(200);
    expect(scheduler.now()).toBeLessThan(200 + 2 * 20);
  });
});

describe('tailFile (virtual time)', () => {
  const collect = async (stream: NodeJS.ReadableStream) => {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };

  it('waits for a file that does not exist yet, then follows what is appended until idle', async () => {
    const file = path.join(tempDir(), 'later.arrows');
    const clock = new VirtualClock();
    const read = collect(tailFile(file, { pollMs: 10, idleMs: 600, clock }));
    await clock.sleeping();
    clock.advance(150);
    await clock.sleeping();
    writeFileSync(file, 'first ');
    clock.advance(10);
    await clock.sleeping();
    appendFileSync(file, 'second');
    clock.advance(10);
    await stepUntil(clock, 100, read);
    expect((await read).toString()).toBe('first second');
  });

  it('ends empty when the file never appears within the idle time', async () => {
    const clock = new VirtualClock();
    const read = collect(tailFile(path.join(tempDir(), 'never.arrows'), { pollMs: 10, idleMs: 200, clock }));
    const endedAt = await stepUntil(clock, 10, read);
    expect((await read).length).toBe(0);
    expect(endedAt).toBeGreaterThanOrEqual(200);
    expect(endedAt).toBeLessThan(200 + 2 * 10);
  });
});

describe('a task\'s fold', () => {
  const stats = emptyMaskFisher({ numLayers: 1, numHeads: 2, intermediateSize: 3 }, { mode: 'batch', batchSize: 4, task: 't', modelFingerprint: 'm' });
  const start: TaskProgress = { task: 't', state: { stats, cursor: { consumed: new Set() }, quarantined: 0, skippedRows: 0 }, folded: 0, buffered: 0, event: { kind: 'start' } };
  const batch = (spans: ModelBatch['spans'], sourcesDone = 0): ModelBatch => {
    const rows = spans.reduce((n, s) => n + s.rows, 0);
    return { tokens: { batchSize: rows, seqLen: 1, inputIds: new Int32Array(rows), attentionMask: new Int32Array(rows), tokenTypeIds: new Int32Array(rows) }, completedSources: Array.from({ length: sourcesDone }, () => ({ file: 'x', batchIndex: 0, rowOffset: 0, rowId: 0, numRows: 1 })), spans };
  };
  const contribution = (examples: number): FisherContribution => ({ head: Float64Array.of(1, 2), neuron: Float64Array.of(1, 1, 1), examples, dataFingerprint: '1'.repeat(64) });

  it('moves the cursor over exactly the rows of each batch, across files and partial batches', () => {
    const fold = foldTaskItem(undefined);
    const a = fold(start, { read: 10 });
    expect(a.buffered).toBe(10);
    const b = fold(a, { batch: batch([{ file: 'a', row: 0, rows: 8, fileRows: 10 }]), contribution: contribution(8) });
    expect(b.state.cursor).toEqual({ consumed: new Set(), current: { file: 'a', row: 8 } });
    expect(b.event).toEqual({ kind: 'folded', rows: 8, filesDone: [], sourcesDone: 0 });
    const c = fold(fold(b, { read: 5 }), { batch: batch([{ file: 'a', row: 8, rows: 2, fileRows: 10 }, { file: 'b', row: 2, rows: 2, fileRows: 5 }], 1), contribution: contribution(4) });
    expect(c.state.cursor).toEqual({ consumed: new Set(['a']), current: { file: 'b', row: 4 } });
    expect(c.event).toMatchObject({ filesDone: ['a'], sourcesDone: 1 });
    expect([c.state.stats.examples, c.state.stats.batches, c.folded, c.buffered]).toEqual([12, 2, 12, 3]);
    expect(Array.from(maskFisherOf(c.state.stats).head)).toEqual([2, 4]);
    // The states before are snapshots: a checkpoint or a version holding one never sees it change.
    expect(b.state.cursor.consumed.size).toBe(0);
    expect(b.state.stats.examples).toBe(8);
  });

  it('a dead batch moves the cursor and counts its rows as skipped, without folding; skipped files change the cursor only', () => {
    const fold = foldTaskItem(undefined);
    const dead = fold(fold(start, { read: 4 }), { batch: batch([{ file: 'a', row: 0, rows: 4, fileRows: 4 }]), dead: { reason: 'poison' } });
    expect(dead.state.cursor).toEqual({ consumed: new Set(['a']) });
    expect(dead.state.skippedRows).toBe(4);
    expect(dead.state.stats).toBe(stats);
    expect([dead.folded, dead.buffered]).toEqual([0, 0]);
    expect(dead.event).toEqual({ kind: 'dead', rows: 4, reason: 'poison', filesDone: ['a'], sourcesDone: 0 });
    const resumed: TaskProgress = { ...start, state: { ...start.state, cursor: { consumed: new Set(), current: { file: 'q', row: 3 } } } };
    const quarantined = fold(resumed, { skipped: { file: 'q', why: 'quarantined' } });
    expect(quarantined.state.cursor).toEqual({ consumed: new Set() });
    expect(quarantined.state.quarantined).toBe(1);
    const empty = fold(quarantined, { skipped: { file: 'e', why: 'empty' } });
    expect(empty.state.cursor).toEqual({ consumed: new Set(['e']) });
  });

  it('a contribution that is not finite is not folded: its rows are skipped like a dead batch, with the task\'s rows named in the reason', () => {
    const fold = foldTaskItem(undefined);
    const nan = { ...contribution(4), neuron: Float64Array.of(1, Number.NaN, 1) };
    const refused = fold(fold(start, { read: 4 }), { batch: batch([{ file: 'a', row: 4, rows: 4, fileRows: 8 }]), contribution: nan });
    expect(refused.state.stats).toBe(stats);
    expect(refused.state.skippedRows).toBe(4);
    expect(refused.state.cursor).toEqual({ consumed: new Set(['a']) });
    expect(refused.event).toEqual({ kind: 'dead', rows: 4, reason: "the engine's contribution holds NaN at neuron element 1; rows a[4..8) are skipped, not folded", filesDone: ['a'], sourcesDone: 0 });
  });

  it('Gram sums (regmean) are added in place; each state keeps its own counts, and a non-finite Gram is not folded', () => {
    const inputs = [{ name: 'x', dim: 2 }];
    const grams: TaskStatistics = { ...emptyGramStats(inputs, { task: 't', modelFingerprint: 'm' }), batches: 0 };
    const gramStart: TaskProgress = { ...start, state: { ...start.state, stats: grams } };
    const gram = (values: number[]): GramContribution => ({ grams: new Map([['x', { sum: Float64Array.from(values), count: 3 }]]), examples: 2, dataFingerprint: '1'.repeat(64) });
    const fold = foldTaskItem(undefined);
    const one = fold(gramStart, { batch: batch([{ file: 'a', row: 0, rows: 2 }]), contribution: gram([1, 2, 2, 5]) });
    const two = fold(one, { batch: batch([{ file: 'a', row: 2, rows: 2 }]), contribution: gram([1, 0, 0, 1]) });
    const g = two.state.stats as StreamGrams;
    expect([g.examples, g.batches, one.state.stats.examples, one.state.stats.batches]).toEqual([4, 2, 2, 1]);
    expect(Array.from(g.grams.get('x')!.sum)).toEqual([2, 2, 2, 6]);
    expect(g.grams.get('x')!.count).toBe(6);
    const refused = fold(two, { batch: batch([{ file: 'a', row: 4, rows: 2 }]), contribution: gram([1, Infinity, 0, 1]) });
    expect(refused.state.stats).toBe(g);
    expect(Array.from(g.grams.get('x')!.sum)).toEqual([2, 2, 2, 6]);
    expect(refused.event).toMatchObject({ kind: 'dead', reason: "the engine's contribution holds Infinity at x element 1; rows a[4..6) are skipped, not folded" });
  });

  it('decay scales the statistics before each batch is added', () => {
    const once = foldTaskItem(4)(start, { batch: batch([{ file: 'a', row: 0, rows: 4 }]), contribution: contribution(4) });
    const twice = foldTaskItem(4)(once, { batch: batch([{ file: 'a', row: 4, rows: 4 }]), contribution: contribution(4) });
    expect(twice.state.stats.examples).toBe(4 * 0.5 + 4);
    expect(twice.state.cursor.current).toEqual({ file: 'a', row: 8 });
  });

  it('advanceCursor leaves a stream (no file length) current at its last row', () => {
    expect(advanceCursor({ consumed: new Set() }, [{ file: '<stream>', row: 30, rows: 10 }])).toEqual({ cursor: { consumed: new Set(), current: { file: '<stream>', row: 40 } }, filesDone: [] });
  });
});
