import { appendFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { DirectoryWatcher, tailFile } from '@fisher-merge/data';
import { RowLedger } from '@fisher-merge/stream-job';
import { tempDir } from './helpers.ts';

describe('DirectoryWatcher', () => {
  it('stable rule: a file that keeps growing is not handed out until it stopped changing; hidden and other names never', async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, '.hidden.parquet'), 'x');
    writeFileSync(path.join(dir, 'b.parquet.tmp'), 'x');
    const growing = path.join(dir, 'a.parquet');
    writeFileSync(growing, 'x');
    const watcher = new DirectoryWatcher(dir, { ready: { kind: 'stable', ms: 300 }, pollMs: 20, idleMs: 200 });
    let handedAt = 0;
    const next = watcher.next().then((f) => ((handedAt = Date.now()), f));
    const start = Date.now();
    for (let i = 0; i < 6; i++) {
      await sleep(100);
      appendFileSync(growing, 'more');
    }
    const lastWrite = Date.now();
    expect(await next).toBe(growing);
    expect(handedAt - lastWrite).toBeGreaterThanOrEqual(250);
    expect(handedAt - start).toBeGreaterThanOrEqual(600);
    // Nothing else ever becomes ready: idle.
    expect(await watcher.next()).toBeUndefined();
    expect(watcher.backlog).toBe(0);
  });

  it('marker rule: ready once <file>.done exists, lowest name first; ignored files are skipped', async () => {
    const dir = tempDir();
    for (const n of ['c', 'a', 'b']) writeFileSync(path.join(dir, `${n}.parquet`), 'x');
    const watcher = new DirectoryWatcher(dir, { ready: { kind: 'marker', suffix: '.done' }, pollMs: 20, idleMs: 5000, ignore: (f) => f.endsWith('a.parquet') });
    const abort = new AbortController();
    const first = watcher.next(abort.signal);
    await sleep(100);
    expect(watcher.backlog).toBe(2);
    writeFileSync(path.join(dir, 'c.parquet.done'), '');
    writeFileSync(path.join(dir, 'b.parquet.done'), '');
    expect(path.basename((await first)!)).toBe('b.parquet');
    expect(path.basename((await watcher.next())!)).toBe('c.parquet');
    const waiting = watcher.next(abort.signal);
    abort.abort();
    expect(await waiting).toBeUndefined();
  });
});

describe('tailFile', () => {
  const collect = async (stream: NodeJS.ReadableStream) => {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };

  it('waits for a file that does not exist yet, then follows what is appended', async () => {
    const file = path.join(tempDir(), 'later.arrows');
    const read = collect(tailFile(file, { pollMs: 10, idleMs: 600 }));
    await sleep(150);
    writeFileSync(file, 'first ');
    await sleep(100);
    appendFileSync(file, 'second');
    expect((await read).toString()).toBe('first second');
  });

  it('ends empty when the file never appears within the idle time', async () => {
    const started = Date.now();
    expect((await collect(tailFile(path.join(tempDir(), 'never.arrows'), { pollMs: 10, idleMs: 200 }))).length).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
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
