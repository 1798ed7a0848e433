import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { logEvent, type TokenBatch } from '@fisher-merge/core';
import type { FisherContribution } from '@fisher-merge/fisher';
import type { JobMetrics } from '@fisher-merge/metrics';
import { deadLetterFields, entryRun, readBatch, resultFields, type BatchLimits } from './codec.ts';
import type { JobAnnouncement } from './coordinator.ts';
import { jobKeys, WORKERS } from './keys.ts';
import { entriesOf, EntryError, type StreamEntry } from './redis.ts';

/** The job a coordinator announced under `prefix`, if one did. */
export async function readJob(redis: Redis, prefix: string): Promise<JobAnnouncement | undefined> {
  const job = await redis.hgetall(jobKeys(prefix).job);
  if (!job.run || !job.tasks) return undefined;
  return { run: job.run, mode: job.mode as JobAnnouncement['mode'], tasks: JSON.parse(job.tasks) as JobAnnouncement['tasks'] };
}

/**
 * The announced job, once there is one: a worker may start before its coordinator (deployments
 * start parts in any order), so it waits, saying so once. Undefined when `signal` stops the wait.
 */
export async function waitForJob(redis: Redis, prefix: string, url: string, signal: AbortSignal, pollMs = 1000): Promise<JobAnnouncement | undefined> {
  let said = false;
  while (!signal.aborted) {
    const job = await untilAborted(readJob(redis, prefix), signal);
    if (job) return job;
    if (!said && !signal.aborted) logEvent('worker.waiting', { prefix, url, for: `a stream coordinator to announce a job under prefix '${prefix}' (queue.prefix)` });
    said = true;
    await sleep(pollMs, undefined, { signal }).catch(() => undefined);
  }
  return undefined;
}

/** `promise`'s value, or undefined once `signal` aborts (the promise runs on; its rejection is dropped). */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.resolve(undefined);
  }
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, (e: unknown) => (signal.aborted ? resolve(undefined) : reject(e))).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export interface ServeOptions {
  /** This worker's consumer name in the group (host:pid). */
  consumer: string;
  /** The run this worker joined. */
  run: string;
  /** The task's model fingerprint: a new run with the same one is followed in place. */
  modelFingerprint: string;
  /** Entries another consumer left unacknowledged this long are taken over. */
  claimIdleMs: number;
  /** An entry delivered more often than this is dead-lettered (a batch that kills its worker). */
  maxDeliveries: number;
  /** Entries read ahead while one is computed. */
  prefetch: number;
  /** Stop taking entries (SIGTERM, or another task saw a new job); those in hand are finished. */
  signal: AbortSignal;
  /** Abandon what is in hand (the stop timeout ran out): its entries stay pending for other workers. */
  abandon: AbortSignal;
  /** What a batch is checked against before it reaches the engine. */
  limits: BatchLimits;
  compute: (tokens: TokenBatch) => Promise<FisherContribution>;
  /** How long one blocking read waits for a new entry (it also bounds how late a stop is noticed). */
  blockMs?: number;
  metrics?: JobMetrics;
}

export interface Served {
  served: number;
  /** The job changed this task's model (or dropped the task): the worker must join the job again. */
  rejoin: boolean;
}

/** A read entry and, for one taken over from another consumer, how often it has been delivered. */
interface Taken {
  entry: StreamEntry;
  deliveries: number;
}

/**
 * A worker's loop for one task: takes a batch (first an entry a dead worker left pending longer than
 * `claimIdleMs`, else a new one), checks it, computes its contribution, and in one MULTI writes the
 * result, acknowledges and deletes the entry and counts it for this worker. It reads `prefetch`
 * entries ahead and does not wait for a write before computing the next batch. An entry that cannot
 * be decoded or checked, or was delivered more than `maxDeliveries` times, goes to the task's dead
 * letters (with the reason and this worker's name) and is acknowledged; an entry of an earlier run is
 * acknowledged and dropped; a new run of the same model is followed in place. A worker killed
 * mid-batch leaves its entry pending for another to claim; if it was only slow, both results arrive
 * and the coordinator counts the first.
 */
export async function serveTask(reader: Redis, writer: Redis, prefix: string, task: string, opts: ServeOptions): Promise<Served> {
  const k = jobKeys(prefix).task(task);
  let run = opts.run;
  let served = 0;
  let rejoin = false;
  const writes = new Set<Promise<void>>();
  const write = <T>(reply: Promise<T>, done: (reply: T) => void): void => {
    const w = reply.then(done, (e: Error) => {
      // Lost with the connection (a Redis restart): the entry stays pending and is claimed again.
      if (!opts.abandon.aborted) logEvent('worker.write_lost', { task, error: e.message });
    }).finally(() => writes.delete(w));
    writes.add(w);
  };
  // Two workers may hold one entry (a prefetched entry idle past claim_idle_ms is claimed by another):
  // only the one whose XACK takes it off the group's pending list refuses it, so one letter, one line.
  const refuse = (entry: StreamEntry, reason: string): void => {
    write(writer.eval(DEAD_LETTER, 2, k.batches, k.dead, WORKERS, entry.id, ...deadLetterFields(entry, reason, opts.consumer)), (acked) => {
      if (acked === 1) logEvent('worker.dead_letter', { task, entry: entry.id, reason, dead_letters: k.dead });
    });
  };
  /** Whose entry this is: ours, an earlier run's, or a new run's (followed when its model is ours). */
  const runOf = async (seen: string): Promise<'ours' | 'stale' | 'rejoin'> => {
    if (seen === run) return 'ours';
    const job = await readJob(writer, prefix);
    if (job?.run !== seen) return 'stale';
    if (job.tasks[task]?.modelFingerprint !== opts.modelFingerprint) return 'rejoin';
    run = seen;
    logEvent('worker.joined', { task, run, followed: 'a new coordinator run' });
    return 'ours';
  };

  const handle = async ({ entry, deliveries }: Taken): Promise<void> => {
    const entryRunId = entryRun(entry);
    const whose = entryRunId === undefined ? 'ours' : await runOf(entryRunId);
    if (whose === 'rejoin') {
      rejoin = true;
      return;
    }
    if (whose === 'stale') {
      write(writer.multi().xack(k.batches, WORKERS, entry.id).xdel(k.batches, entry.id).exec(), (replies) => {
        if (replies?.[0]?.[1] === 1) logEvent('worker.stale_entry', { task, entry: entry.id, run: entryRunId, current: run });
      });
      return;
    }
    if (deliveries > opts.maxDeliveries) return refuse(entry, `delivered ${deliveries} times, more than queue.max_deliveries (${opts.maxDeliveries}): a batch its workers died on`);
    let batch;
    try {
      batch = readBatch(entry, opts.limits);
    } catch (e) {
      if (!(e instanceof EntryError)) throw e;
      return refuse(entry, e.message);
    }
    const end = opts.metrics?.workerBatchSeconds.startTimer({ task });
    const contribution = await untilAborted(opts.compute(batch.tokens), opts.abandon);
    if (!contribution) return;
    end?.();
    const result = writer.multi().xadd(k.results, '*', ...resultFields(batch, entry.id, opts.consumer, contribution)).xack(k.batches, WORKERS, entry.id).xdel(k.batches, entry.id).hincrby(k.done, opts.consumer, 1);
    write(result.exec(), () => {
      served++;
      opts.metrics?.batchesServed.inc({ task });
      logEvent('worker.batch', { task, seq: batch.seq, examples: batch.tokens.batchSize });
    });
  };

  // Reads run ahead on their own connection (a blocked XREADGROUP holds it); writes go on another.
  const reads: Promise<Taken | undefined>[] = [];
  while (!opts.signal.aborted && !rejoin) {
    while (reads.length < 1 + opts.prefetch) reads.push(nextEntry(reader, k.batches, opts));
    const taken = await untilAborted(reads.shift()!, opts.signal);
    if (taken) await untilAborted(handle(taken), opts.abandon);
    // Writes in flight are bounded too: a Redis that stopped answering stops the worker taking more.
    while (writes.size > opts.prefetch + 1 && !opts.abandon.aborted) await untilAborted(Promise.race(writes), opts.abandon);
  }
  // Stopping: entries already read are in hand; finish them, and the writes, unless told to abandon.
  for (const read of reads) {
    const taken = rejoin ? undefined : await untilAborted(read, opts.abandon);
    if (taken && !opts.abandon.aborted) await untilAborted(handle(taken), opts.abandon);
  }
  await untilAborted(Promise.all(writes), opts.abandon);
  return { served, rejoin };
}

/** KEYS: batches, dead; ARGV: group, entry id, the letter's fields. Acknowledges and moves the entry to the dead letters, if it was still pending. */
const DEAD_LETTER = `if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', unpack(ARGV, 3))
return 1`;

/** Errors of a read whose stream or group the coordinator just dropped to start a new run, or a Redis that lost them. */
const RESTARTED_STREAM = /NOGROUP|UNBLOCKED/;

/** The next entry for this consumer, or undefined after a read that found none (never rejects). */
async function nextEntry(redis: Redis, stream: string, opts: ServeOptions): Promise<Taken | undefined> {
  try {
    const claimed = (await redis.callBuffer('XAUTOCLAIM', stream, WORKERS, opts.consumer, String(opts.claimIdleMs), '0-0', 'COUNT', '1')) as [Buffer, unknown[]];
    const taken = entriesOf([stream, claimed[1]])[0];
    if (taken) {
      // [id, consumer, idle, deliveries]; gone when its first worker finished it meanwhile.
      const [pending] = (await redis.call('XPENDING', stream, WORKERS, taken.id, taken.id, '1')) as [string, string, number, number][];
      if (!pending) return undefined;
      logEvent('worker.claimed', { stream, entry: taken.id, deliveries: Number(pending[3]) });
      return { entry: taken, deliveries: Number(pending[3]) };
    }
    const reply = await redis.callBuffer('XREADGROUP', 'GROUP', WORKERS, opts.consumer, 'COUNT', '1', 'BLOCK', String(opts.blockMs ?? 1000), 'STREAMS', stream, '>');
    const entry = entriesOf(reply)[0];
    return entry ? { entry, deliveries: 1 } : undefined;
  } catch (e) {
    if (opts.abandon.aborted) return undefined;
    // The coordinator is (re)creating the task's stream, or Redis came back without it: wait for it.
    if (!RESTARTED_STREAM.test((e as Error).message)) logEvent('worker.read_failed', { stream, error: (e as Error).message });
    await sleep(opts.blockMs ?? 1000, undefined, { signal: opts.signal }).catch(() => undefined);
    return undefined;
  }
}
