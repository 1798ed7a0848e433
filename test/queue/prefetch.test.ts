import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { lastValueFrom, toArray } from 'rxjs';
import type { Redis } from 'ioredis';
import type { TokenBatch } from '@fisher-merge/core';
import { glueTask, taskBatches } from '@fisher-merge/data';
import { openEngine } from '@fisher-merge/engines';
import { computeContribution, type FisherContribution } from '@fisher-merge/fisher';
import { batchFields, jobKeys, serveTask, WORKERS, type Served } from '@fisher-merge/queue';
import { loadTaskModel } from '@fisher-merge/task-model';
import { logLines, type LogLine } from '../support.ts';
import { modelDir, publishParquet, taskRows, tempDir } from '../stream-job/helpers.ts';
import { eventually, RedisServer } from './helpers.ts';

// A guard against a hang, not a speed requirement.
const HANG_GUARD_MS = 300_000;

const TASK = 'sst2';
const PREFIX = 'prefetch';
const RUN = 'run-1';
const CLAIM_IDLE_MS = 200;
const keys = jobKeys(PREFIX).task(TASK);

type Compute = (tokens: TokenBatch) => Promise<FisherContribution>;

interface Setup {
  client: Redis;
  /** The batch entries' ids, in order. */
  ids: string[];
  /** A worker loop for `consumer` until `signal` aborts. */
  serve: (consumer: string, signal: AbortSignal, compute: Compute, prefetch?: number) => Promise<Served>;
  /** Each batch computed by the fixture model's engine. */
  compute: Compute;
  /** A compute that holds its first call until `release()`, and counts its calls. */
  gated: () => { compute: Compute; release: () => void; calls: () => number };
  /** Entries pending for `consumer`; with `idleMs`, only those idle at least that long. */
  pendingFor: (consumer: string, idleMs?: number) => Promise<number>;
  log: () => LogLine[];
}

/** `count` real sst2 batches appended to a fresh Redis's task stream (as a coordinator would), and what a test needs to serve them. */
async function withEntries(count: number, body: (s: Setup) => Promise<void>): Promise<void> {
  const redis = await RedisServer.start();
  const connections: Redis[] = [];
  const connect = (): Redis => {
    const c = redis.client();
    connections.push(c);
    return c;
  };
  const logged: string[] = [];
  vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array) => {
    logged.push(String(chunk));
    return true;
  }) as typeof process.stderr.write);
  const { model, tokenizer, task } = await loadTaskModel(modelDir(TASK), glueTask(TASK), {});
  const engine = await openEngine('onnx', model.weights, {});
  try {
    const client = connect();
    const file = path.join(tempDir(), `${TASK}.parquet`);
    publishParquet(file, await taskRows(TASK, 8 * count));
    const batches = await lastValueFrom(taskBatches(file, { task, tokenizer, batchSize: 8, padTokenId: model.config.padTokenId }).pipe(toArray()));
    expect(batches).toHaveLength(count);
    await client.call('XGROUP', 'CREATE', keys.batches, WORKERS, '0', 'MKSTREAM');
    const ids: string[] = [];
    for (const [seq, b] of batches.entries()) ids.push((await client.xadd(keys.batches, '*', ...batchFields(RUN, seq, b.tokens)))!);
    const compute: Compute = (tokens) => computeContribution(engine, 'batch', tokens);
    await body({
      client,
      ids,
      compute,
      serve: (consumer, signal, work, prefetch = 1) =>
        serveTask(connect(), connect(), PREFIX, TASK, { consumer, run: RUN, modelFingerprint: '', claimIdleMs: CLAIM_IDLE_MS, maxDeliveries: 3, prefetch, signal, abandon: new AbortController().signal, limits: model.config, compute: work, blockMs: 50 }),
      gated: () => {
        let release!: () => void;
        const released = new Promise<void>((resolve) => (release = resolve));
        let calls = 0;
        return {
          compute: async (tokens) => {
            calls++;
            await released;
            return compute(tokens);
          },
          release,
          calls: () => calls,
        };
      },
      pendingFor: async (consumer, idleMs = 0) => ((await client.call('XPENDING', keys.batches, WORKERS, 'IDLE', String(idleMs), '-', '+', '10', consumer)) as unknown[]).length,
      log: () => logLines(logged.join('')),
    });
  } finally {
    await engine.dispose();
    for (const c of connections) c.disconnect();
    await redis.stop();
  }
}

const results = async (client: Redis) => (await client.xrange(keys.results, '-', '+')).map(([, f]) => ({ entry: f[f.indexOf('entry') + 1], worker: f[f.indexOf('worker') + 1] })).sort((x, y) => x.entry!.localeCompare(y.entry!));
const events = (log: LogLine[], event: string) => log.filter((l) => l.event === event).map((l) => l.entry);

afterEach(() => {
  vi.restoreAllMocks();
});

describe('a worker that reads ahead', () => {
  it('does not claim back an entry it holds, however long it waits its turn: each computed and counted once', async () => {
    await withEntries(3, async ({ client, ids, serve, gated, pendingFor, log }) => {
      const slow = gated();
      const stop = new AbortController();
      const a = serve('a', stop.signal, slow.compute, 2);
      // The first entry in the engine, the other two read ahead; all wait past claim_idle_ms.
      await eventually('worker a holds every entry past claim_idle_ms', async () => slow.calls() === 1 && (await pendingFor('a', CLAIM_IDLE_MS)) === 3);
      slow.release();
      await eventually('every entry done', async () => (await client.hget(keys.done, 'a')) === '3');
      stop.abort();
      expect((await a).served).toBe(3);
      expect(slow.calls()).toBe(3);
      expect(await results(client)).toEqual(ids.map((entry) => ({ entry, worker: 'a' })));
      expect(await client.hgetall(keys.done)).toEqual({ a: '3' });
      expect(events(log(), 'worker.claimed')).toEqual([]);
      expect(events(log(), 'worker.result_dropped')).toEqual([]);
    });
  }, HANG_GUARD_MS);

  it('an entry it holds past claim_idle_ms that another worker takes over is computed and counted once: one result, one count', async () => {
    await withEntries(2, async ({ client, ids, serve, compute, gated, pendingFor, log }) => {
      // Worker a computes the first entry slowly (held until released) and has read the second ahead.
      const slow = gated();
      const stopA = new AbortController();
      const a = serve('a', stopA.signal, slow.compute);
      await eventually('worker a computes one entry and holds the other', async () => slow.calls() === 1 && (await pendingFor('a')) === 2);

      // Worker b claims both once they have been idle for claim_idle_ms, and finishes them.
      const stopB = new AbortController();
      const b = serve('b', stopB.signal, compute);
      await eventually('worker b finished both entries', async () => (await client.hget(keys.done, 'b')) === '2');
      stopB.abort();
      expect((await b).served).toBe(2);

      // Now a finishes the entry in its engine (b already did) and comes to the one it read ahead (b took it over).
      slow.release();
      stopA.abort();
      expect((await a).served).toBe(0);
      expect(slow.calls()).toBe(1);

      expect(await results(client)).toEqual(ids.map((entry) => ({ entry, worker: 'b' })));
      expect(await client.hgetall(keys.done)).toEqual({ b: '2' });
      expect(await client.xlen(keys.batches)).toBe(0);
      // Which of the two a read first is up to its reads (one may look for entries to take over first).
      const dropped = events(log(), 'worker.result_dropped');
      const skipped = events(log(), 'worker.taken_over');
      expect(dropped).toHaveLength(1);
      expect(skipped).toHaveLength(1);
      expect([...dropped, ...skipped].sort()).toEqual(ids);
    });
  }, HANG_GUARD_MS);
});
