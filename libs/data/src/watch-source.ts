import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { concatMap, defer, EMPTY, finalize, mergeMap, Observable, of, repeat, type ObservableInput, type OperatorFunction, type SchedulerLike, Subscription } from 'rxjs';
import { UserError } from '@fisher-merge/core';
import type { FlowControl } from './flow-control.ts';
import type { SourceBatch } from './source-batch.ts';

/**
 * When a file in a watched directory may be read:
 * - `stable`: its size and modification time have not changed for `ms` milliseconds;
 * - `marker`: a sibling file named `<file><suffix>` exists (the writer creates it when done).
 * With either rule, hidden files (`.name`) and names not ending in the extension are never read, so
 * a writer may also write `part.parquet.tmp` (or `.part.parquet`) and rename it when complete.
 */
export type ReadyRule = { kind: 'stable'; ms: number } | { kind: 'marker'; suffix: string };

export interface DirectoryWatcherOptions {
  /** Only files whose names end with this are data (default `.parquet`). */
  extension?: string;
  ready: ReadyRule;
  /** How often the directory is listed. */
  pollMs: number;
  /** Files to leave alone, e.g. those an earlier run consumed (not counted in the backlog). */
  ignore?: (file: string) => boolean;
  /**
   * `next()` gives up (resolves undefined) once the directory has held no unread file, ready or
   * not, for this long: the input is finished. Default: wait forever.
   */
  idleMs?: number;
  /** Once aborted, `next()` gives up as soon as no unread file is present (drain now, without waiting `idleMs`). */
  drain?: AbortSignal;
  /** Time source (tests pass a virtual clock). */
  clock?: Clock;
}

/** Where the watcher and the file follower get the time and wait: the system clock unless a test passes a virtual one. */
export interface Clock {
  now(): number;
  /** Resolves after `ms`, or early when `signal` aborts; never rejects. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => sleep(ms, undefined, signal ? { signal } : {}).catch(() => undefined),
};

/** A Clock on an RxJS scheduler: one scheduler (a TestScheduler in tests) then drives every timer of a job. */
export function schedulerClock(scheduler: SchedulerLike): Clock {
  return {
    now: () => scheduler.now(),
    sleep: (ms, signal) =>
      new Promise((resolve) => {
        if (signal?.aborted) return resolve();
        const timer = new Subscription();
        const wake = (): void => {
          timer.unsubscribe();
          signal?.removeEventListener('abort', wake);
          resolve();
        };
        timer.add(scheduler.schedule(wake, ms));
        signal?.addEventListener('abort', wake, { once: true });
      }),
  };
}

interface Observed {
  size: number;
  mtimeMs: number;
  since: number;
}

/**
 * Hands out each ready file of one directory (not recursive) once, lowest name first among the
 * ready ones: name files so that name order is arrival order (a timestamp or sequence number) when
 * their order matters. Pull-based: the directory is only listed while a consumer waits in `next()`.
 */
export class DirectoryWatcher {
  private readonly extension: string;
  private readonly handedOut = new Set<string>();
  private readonly observed = new Map<string, Observed>();
  private waiting = 0;
  private readonly clock: Clock;

  constructor(readonly dir: string, private readonly options: DirectoryWatcherOptions) {
    this.extension = options.extension ?? '.parquet';
    this.clock = options.clock ?? systemClock;
  }

  /** Data files present, not yet handed out and not ignored, as of the last listing. */
  get backlog(): number {
    return this.waiting;
  }

  /** The next ready file (full path); undefined when `signal` aborts or the directory stayed idle for `idleMs`. */
  async next(signal?: AbortSignal): Promise<string | undefined> {
    let idleSince = this.clock.now();
    const wake = anySignal(signal, this.options.drain);
    while (!signal?.aborted) {
      const { ready, pending } = await this.scan();
      if (ready) {
        this.handedOut.add(ready);
        this.observed.delete(ready);
        this.waiting = pending - 1;
        return ready;
      }
      if (pending > 0) idleSince = this.clock.now();
      else if (this.options.drain?.aborted || (this.options.idleMs !== undefined && this.clock.now() - idleSince >= this.options.idleMs)) return undefined;
      await this.clock.sleep(this.options.pollMs, wake);
    }
    return undefined;
  }

  private async scan(): Promise<{ ready: string | undefined; pending: number }> {
    const names = new Set(await fs.readdir(this.dir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return [];
      throw e;
    }));
    const candidates = [...names]
      .filter((n) => !n.startsWith('.') && n.endsWith(this.extension))
      .map((n) => path.join(this.dir, n))
      .filter((f) => !this.handedOut.has(f) && !this.options.ignore?.(f))
      .sort();
    this.waiting = candidates.length;
    for (const file of candidates) {
      if (await this.isReady(file, names)) return { ready: file, pending: candidates.length };
    }
    return { ready: undefined, pending: candidates.length };
  }

  private async isReady(file: string, names: Set<string>): Promise<boolean> {
    const rule = this.options.ready;
    if (rule.kind === 'marker') return names.has(path.basename(file) + rule.suffix);
    const stat = await fs.stat(file).catch(() => undefined);
    if (!stat?.isFile()) return false;
    const now = this.clock.now();
    const seen = this.observed.get(file);
    if (!seen || seen.size !== stat.size || seen.mtimeMs !== stat.mtimeMs) {
      this.observed.set(file, { size: stat.size, mtimeMs: stat.mtimeMs, since: now });
      return rule.ms === 0;
    }
    return now - seen.since >= rule.ms;
  }
}

/**
 * Drops the rows of a file before `startRow` (consumed by an earlier run), giving back the flow
 * credit of every batch that ends up empty.
 */
export function skipRowsBefore(startRow: number, flow: FlowControl | undefined): OperatorFunction<SourceBatch, SourceBatch> {
  if (startRow === 0) return (source) => source;
  return mergeMap((item) => {
    const { rowOffset, numRows } = item.source;
    if (rowOffset + numRows <= startRow) {
      flow?.release();
      return EMPTY;
    }
    if (rowOffset >= startRow) return of(item);
    const first = startRow - rowOffset;
    const selection = item.selection ? item.selection.filter((r) => r >= first) : Int32Array.from({ length: numRows - first }, (_, i) => first + i);
    if (selection.length === 0) {
      flow?.release();
      return EMPTY;
    }
    return of({ ...item, selection });
  });
}

/**
 * The files of a watched directory, one after another as they become ready, each turned into items
 * by `read`: the next file is only asked for once the previous one's items have all been emitted,
 * so a backlog costs nothing but directory listings. Completes when the watcher gives up (idle or
 * drained); unsubscribing ends the wait for the next file.
 */
export function watchedFiles<T>(watcher: DirectoryWatcher, read: (file: string) => ObservableInput<T>): Observable<T> {
  return defer(() => {
    // Per subscription: unsubscribing ends the wait for the next file.
    const unsubscribed = new AbortController();
    let finished = false;
    const oneFile = defer(() => watcher.next(unsubscribed.signal)).pipe(
      concatMap((file) => {
        if (file === undefined) {
          finished = true;
          return EMPTY;
        }
        return read(file);
      }),
    );
    return oneFile.pipe(
      repeat({ delay: () => (finished ? EMPTY : of(0)) }),
      finalize(() => unsubscribed.abort()),
    );
  });
}

export interface TailFileOptions {
  pollMs: number;
  /** Ends the stream when aborted. */
  signal?: AbortSignal;
  /** Ends the stream after this long without new bytes (the writer is done). Default: never. */
  idleMs?: number;
  /** Once aborted, the stream ends at the first read that finds no new bytes. */
  drain?: AbortSignal;
  chunkBytes?: number;
  clock?: Clock;
}

/**
 * A file being appended to, as a readable stream that waits for more bytes at its end (`tail -f`):
 * feed it to `arrowIpcSource` to follow an Arrow IPC stream file while a writer appends batches.
 * A file that does not exist yet is waited for (it ends empty if `idleMs` passes first).
 */
export function tailFile(file: string, options: TailFileOptions): Readable {
  const chunkBytes = options.chunkBytes ?? 1 << 20;
  const clock = options.clock ?? systemClock;
  const wake = anySignal(options.signal, options.drain);
  const pause = () => clock.sleep(options.pollMs, wake);
  const idle = (since: number): boolean => options.drain?.aborted === true || (options.idleMs !== undefined && clock.now() - since >= options.idleMs);
  async function* chunks(): AsyncGenerator<Buffer> {
    let lastData = clock.now();
    let handle: fs.FileHandle | undefined;
    while (!handle) {
      handle = await fs.open(file, 'r').catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw new UserError(`cannot read ${file}: ${e.message}`);
        return undefined;
      });
      if (handle) break;
      if (options.signal?.aborted || idle(lastData)) return;
      await pause();
    }
    const buffer = Buffer.allocUnsafe(chunkBytes);
    try {
      let position = 0;
      while (!options.signal?.aborted) {
        const { bytesRead } = await handle.read(buffer, 0, chunkBytes, position);
        if (bytesRead > 0) {
          position += bytesRead;
          lastData = clock.now();
          // A copy: the reader may keep the chunk while the buffer is refilled.
          yield Buffer.from(buffer.subarray(0, bytesRead));
          continue;
        }
        if (idle(lastData)) return;
        await pause();
      }
    } finally {
      await handle.close();
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** A signal aborted when any of the given ones is; undefined when none is given. */
function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const given = signals.filter((s): s is AbortSignal => s !== undefined);
  return given.length <= 1 ? given[0] : AbortSignal.any(given);
}
