import { asyncScheduler, fromEvent, type Observable, type SchedulerLike } from 'rxjs';
import { Redis } from 'ioredis';
import { logEvent, UserError } from '@fisher-merge/core';
import type { JobMetrics } from '@fisher-merge/metrics';
import { giveUpAfter } from './timing.ts';

export interface OpenRedisOptions {
  /** How long the first connection may keep failing (retried with backoff) before one clear line; 0: the first failure. */
  connectTimeoutS?: number;
  /** Counts reconnections. */
  metrics?: JobMetrics;
}

/** Delay before reconnection attempt `attempt`: doubling from 100 ms, at most 5 s. */
const backoffMs = (attempt: number): number => Math.min(100 * 2 ** Math.min(attempt - 1, 6), 5000);

/**
 * A connection to the Redis named by `url` (redis://HOST:PORT[/DB], rediss://…, or a unix socket
 * path). It retries with backoff, at start for up to `connectTimeoutS` (then one clear line) and
 * after a loss for as long as it takes, re-sending unanswered commands, so a Redis restart only
 * pauses the job. While Redis is unreachable a `queue.redis_unreachable` line is logged at attempts
 * 1, 2, 4, 8, … (a bounded rate however long it lasts), and `queue.redis_reconnected` once back.
 */
export async function openRedis(url: string, role: string, options: OpenRedisOptions = {}): Promise<Redis> {
  const timeoutMs = (options.connectTimeoutS ?? 0) * 1000;
  const redisOptions = { lazyConnect: true, maxRetriesPerRequest: null, enableReadyCheck: true, retryStrategy: backoffMs };
  const redis = /^rediss?:\/\//.test(url) ? new Redis(url, redisOptions) : new Redis({ ...redisOptions, path: url });
  let lastError: Error | undefined;
  let attempts = 0;
  let connected = false;
  redis.on('error', (e: Error) => (lastError = e));
  redis.on('reconnecting', (delay: number) => {
    attempts++;
    if ((attempts & (attempts - 1)) === 0) logEvent('queue.redis_unreachable', { role, url, attempt: attempts, retry_in_ms: delay, error: lastError?.message ?? 'connection closed' });
  });
  redis.on('ready', () => {
    if (connected) {
      logEvent('queue.redis_reconnected', { role, url, attempts });
      options.metrics?.redisReconnects.inc();
    }
    connected = true;
    attempts = 0;
  });
  const ready = new Promise<boolean>((resolve) => {
    redis.once('ready', () => resolve(true));
    if (timeoutMs === 0) redis.once('close', () => resolve(false));
    else setTimeout(() => resolve(false), timeoutMs).unref();
  });
  redis.connect().catch(() => undefined);
  if (!(await ready)) {
    redis.disconnect();
    const waited = timeoutMs > 0 ? ` for ${options.connectTimeoutS} s (queue.connect_timeout_s)` : '';
    throw new UserError(`${role}: cannot reach Redis at ${url} (queue.url)${waited}: ${lastError?.message ?? 'connection closed'}`);
  }
  return redis;
}

/**
 * Errors with one clear line once `redis` has been disconnected for `timeoutS` without coming back
 * (the coordinator's give-up after a loss); never emits otherwise.
 */
export function giveUpWhenLost(redis: Redis, url: string, role: string, timeoutS: number, scheduler: SchedulerLike = asyncScheduler): Observable<never> {
  return giveUpAfter(fromEvent(redis, 'close'), fromEvent(redis, 'ready'), timeoutS * 1000, () =>
    new UserError(`${role}: lost Redis at ${url} (queue.url) for ${timeoutS} s (queue.connect_timeout_s); the checkpoint holds everything folded, restart when Redis is back`), scheduler);
}

/** The entries of a one-stream XREAD/XREADGROUP reply, whichever reply shape the protocol gives. */
export type StreamEntry = { id: string; fields: Map<string, Buffer> };

export function entriesOf(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  // RESP2: [[key, entries]]; RESP3 maps arrive flattened as [key, entries].
  return rangeEntries(Buffer.isBuffer(reply[0]) || typeof reply[0] === 'string' ? reply[1] : (reply[0] as unknown[])[1]);
}

/** The entries of a several-stream XREAD reply, per stream key. */
export function streamEntries(reply: unknown): Map<string, StreamEntry[]> {
  const out = new Map<string, StreamEntry[]>();
  if (!Array.isArray(reply)) return out;
  // RESP2: [[key, entries], …]; RESP3 maps arrive flattened as [key, entries, key, entries, …].
  const flat = Buffer.isBuffer(reply[0]) || typeof reply[0] === 'string';
  const pairs = flat ? Array.from({ length: reply.length / 2 }, (_, i) => [reply[2 * i], reply[2 * i + 1]]) : reply;
  for (const [key, entries] of pairs as [Buffer, unknown][]) out.set(key.toString(), rangeEntries(entries));
  return out;
}

/** The entries of an XRANGE reply (and of the stream part of the replies above). */
export function rangeEntries(reply: unknown): StreamEntry[] {
  return (reply as [Buffer, Buffer[] | null][]).flatMap(([id, flat]) => {
    // XCLAIM (before Redis 7) and XAUTOCLAIM list entries deleted meanwhile with null fields.
    if (!flat) return [];
    const fields = new Map<string, Buffer>();
    for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!.toString(), flat[i + 1]!);
    return [{ id: id.toString(), fields }];
  });
}

/** A field of an entry someone else wrote: a malformed entry is a reason to refuse it, never a crash. */
export function field(entry: StreamEntry, name: string): Buffer {
  const value = entry.fields.get(name);
  if (value === undefined) throw new EntryError(`has no field '${name}'`);
  return value;
}

/** Why an entry was refused (a missing field, lengths that disagree, ids outside the model's tables). */
export class EntryError extends Error {}
