import { appendFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DirectoryWatcher, tailFile } from '@fisher-merge/data';
import { RowLedger } from '@fisher-merge/stream-job';
import { VirtualClock } from '../support.ts';
import { tempDir } from './helpers.ts';

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

describe('RowLedger', () => {
  it('maps processed examples to the exact resume row, across files and partial batches', () => {
    const cursor = { consumed: new Set<string>() } as { consumed: Set<string>; current?: { file: string; row: number } };
    const ledger = new RowLedger(cursor);
    ledger.expectFile('a', 10);
    ledger.push('a', 0, 6);
    ledger.push('a', 6, 4);
    ledger.expectFile('b', 5);
    ledger.push('b', 2, 3);
    expect(ledger.advance(8)).toEqual([]);
    expect(cursor.current).toEqual({ file: 'a', row: 8 });
    expect(ledger.advance(4)).toEqual(['a']);
    expect(cursor).toEqual({ consumed: new Set(['a']), current: { file: 'b', row: 4 } });
    expect(ledger.buffered).toBe(1);
    expect(ledger.advance(1)).toEqual(['b']);
    expect(cursor).toEqual({ consumed: new Set(['a', 'b']) });
    expect(() => ledger.advance(1)).toThrow(/only 0 rows were read/);
  });
});
