import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { logEvent, type TokenBatch } from '@fisher-merge/core';
import type { FisherContribution } from '@fisher-merge/fisher';
import type { JobMetrics } from '@fisher-merge/metrics';
import { deadLetterFields, entryRun, readBatch, resultFields, type BatchLimits } from './codec.ts';
import type { JobAnnouncement } from './coordinator.ts';
import { jobKeys, WORKERS } from './keys.ts';
import { entriesOf, EntryError, rangeEntries, type StreamEntry } from './redis.ts';

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
  /** The task's run this worker joined (its batch entries carry it). */
  run: string;
  /** The task's model fingerprint: a new run of the task with the same one is followed in place. */
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
}

/** A read entry and, for one taken over from another consumer, how often it has been delivered. */
interface Taken {
  entry: StreamEntry;
  deliveries: number;
  /** performance.now() when the read that delivered it was sent: its idle time in Redis is at most the time since. */
  since: number;
}

/**
 * A worker's loop for one task: takes a batch (first an entry a dead worker left pending longer than
 * `claimIdleMs`, else a new one), checks it, computes its contribution, and in one script
 * acknowledges and deletes the entry and, if that acknowledgement took it off the pending list,
 * writes the result and counts it for this worker. It reads `prefetch` entries ahead and does not
 * wait for a write before computing the next batch. An entry that cannot be decoded or checked, or
 * was delivered more than `maxDeliveries` times, goes to the task's dead letters (with the reason and
 * this worker's name) and is acknowledged; an entry of an earlier run is acknowledged and dropped; a
 * new run of the same model is followed in place. A worker killed mid-batch leaves its entry pending
 * for another to claim. Two workers may hold one entry (a slow one, or one that read it ahead and
 * held it past `claimIdleMs`): the first to finish writes the one result and count; the other drops
 * its result, and skips an entry it read ahead that is no longer its own before computing it.
 */
export async function serveTask(reader: Redis, writer: Redis, prefix: string, task: string, opts: ServeOptions): Promise<Served> {
  const k = jobKeys(prefix).task(task);
  let run = opts.run;
  let served = 0;
  let rejoin = false;
  // Entries in hand (read, and neither computed nor refused with a write Redis has answered): this
  // loop never claims them again, however long they wait their turn.
  const held = new Set<string>();
  const writes = new Set<Promise<void>>();
  /** Sends the write that finishes `entry` here without waiting for it; `done` gets Redis's reply. */
  const write = <T>(entry: string, reply: Promise<T>, done: (reply: T) => void): void => {
    const w = reply.then(done, (e: Error) => {
      // Lost with the connection (a Redis restart): the entry stays pending and is claimed again.
      if (!opts.abandon.aborted) logEvent('worker.write_lost', { task, error: e.message });
    }).finally(() => {
      writes.delete(w);
      held.delete(entry);
    });
    writes.add(w);
  };
  // Two workers may hold one entry (a prefetched entry idle past claim_idle_ms is claimed by another):
  // only the one whose XACK takes it off the group's pending list refuses it, so one letter, one line.
  const refuse = (entry: StreamEntry, reason: string): void => {
    write(entry.id, writer.eval(DEAD_LETTER, 2, k.batches, k.dead, WORKERS, entry.id, ...deadLetterFields(entry, reason, opts.consumer)), (acked) => {
      if (acked === 1) logEvent('worker.dead_letter', { task, entry: entry.id, reason, dead_letters: k.dead });
    });
  };
  /** Whose entry this is: ours, an earlier run's of the task, or a new run's (followed when its model is ours). */
  const runOf = async (seen: string): Promise<'ours' | 'stale' | 'rejoin'> => {
    if (seen === run) return 'ours';
    const announced = (await readJob(writer, prefix))?.tasks[task];
    if (announced?.run !== seen) return 'stale';
    if (announced.modelFingerprint !== opts.modelFingerprint) return 'rejoin';
    run = seen;
    logEvent('worker.joined', { task, run, followed: 'a new coordinator run' });
    return 'ours';
  };

  const handle = async ({ entry, deliveries, since }: Taken): Promise<void> => {
    const entryRunId = entryRun(entry);
    const whose = entryRunId === undefined ? 'ours' : await runOf(entryRunId);
    if (whose === 'rejoin') {
      rejoin = true;
      return;
    }
    if (whose === 'stale') {
      write(entry.id, writer.multi().xack(k.batches, WORKERS, entry.id).xdel(k.batches, entry.id).exec(), (replies) => {
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
    // Held long enough to be claimed by another worker (read ahead behind a slow batch): compute it only if still ours.
    if (performance.now() - since >= opts.claimIdleMs && !(await untilAborted(ownedBy(writer, k.batches, entry.id, opts.consumer), opts.abandon))) {
      held.delete(entry.id);
      if (!opts.abandon.aborted) logEvent('worker.taken_over', { task, entry: entry.id, seq: batch.seq, why: `held longer than queue.claim_idle_ms (${opts.claimIdleMs} ms) before its turn, and another worker took it` });
      return;
    }
    const end = opts.metrics?.workerBatchSeconds.startTimer({ task });
    const contribution = await untilAborted(opts.compute(batch.tokens), opts.abandon);
    if (!contribution) return;
    end?.();
    write(entry.id, writer.eval(RESULT, 3, k.batches, k.results, k.done, WORKERS, entry.id, opts.consumer, ...resultFields(batch, entry.id, opts.consumer, contribution)), (written) => {
      if (written !== 1) {
        logEvent('worker.result_dropped', { task, entry: entry.id, seq: batch.seq, why: 'the entry was no longer pending: another worker finished it first (or the run restarted)' });
        return;
      }
      served++;
      opts.metrics?.batchesServed.inc({ task });
      logEvent('worker.batch', { task, seq: batch.seq, examples: batch.tokens.batchSize });
    });
  };

  // Reads run ahead on their own connection (a blocked XREADGROUP holds it); writes go on another.
  // A read looks for entries to take over at least every tenth of claim_idle_ms, and after a read
  // that found nothing; the others are one round trip (a read ahead is answered while the engine
  // holds the thread, and only a round trip's reply can be taken in between two batches).
  let claimsCheckedAt = -Infinity;
  const read = (): Promise<Taken | undefined> => {
    const claims = performance.now() - claimsCheckedAt >= opts.claimIdleMs / 10;
    if (claims) claimsCheckedAt = performance.now();
    return nextEntry(reader, k.batches, opts, claims ? held : undefined).then((taken) => {
      if (taken) held.add(taken.entry.id);
      else claimsCheckedAt = -Infinity;
      return taken;
    });
  };
  const reads: Promise<Taken | undefined>[] = [];
  while (!opts.signal.aborted && !rejoin) {
    while (reads.length < 1 + opts.prefetch) reads.push(read());
    const taken = await untilAborted(reads.shift()!, opts.signal);
    if (taken) await untilAborted(handle(taken), opts.abandon);
    // Writes in flight are bounded too: a Redis that stopped answering stops the worker taking more.
    while (writes.size > opts.prefetch + 1 && !opts.abandon.aborted) await untilAborted(Promise.race(writes), opts.abandon);
  }
  // Stopping: entries already read are in hand; finish them, and the writes, unless told to abandon.
  for (const next of reads) {
    const taken = rejoin ? undefined : await untilAborted(next, opts.abandon);
    if (taken && !opts.abandon.aborted) await untilAborted(handle(taken), opts.abandon);
  }
  await untilAborted(Promise.all(writes), opts.abandon);
  return { served };
}

/** KEYS[1]: batches; ARGV: group, entry id. Acknowledges and deletes the entry; ends the script with 0 unless it was still pending (another worker may have finished it). */
const TAKE_OFF_PENDING = `if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
`;

/** KEYS: batches, results, done; ARGV: group, entry id, consumer, the result's fields. Takes the entry off the pending list, then writes the result and counts it: 1, or 0 if it was not pending. */
const RESULT = `${TAKE_OFF_PENDING}redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
return 1`;

/** KEYS: batches, dead; ARGV: group, entry id, the letter's fields. Takes the entry off the pending list and moves it to the dead letters: 1, or 0 if it was not pending. */
const DEAD_LETTER = `${TAKE_OFF_PENDING}redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', unpack(ARGV, 3))
return 1`;

/** Whether `entry` is still pending for `consumer` (not taken over by another, nor finished). */
async function ownedBy(redis: Redis, stream: string, entry: string, consumer: string): Promise<boolean> {
  const pending = (await redis.call('XPENDING', stream, WORKERS, entry, entry, '1', consumer)) as unknown[];
  return pending.length > 0;
}

/** Errors of a read whose stream or group the coordinator just dropped to start a new run, or a Redis that lost them. */
const RESTARTED_STREAM = /NOGROUP|UNBLOCKED/;

/**
 * The next entry for this consumer, or undefined after a read that found none (never rejects): with
 * `held` (the entries this loop holds: read ahead and waiting their turn), first an entry idle longer
 * than claim_idle_ms (its worker died, or is slow) that is not one of them; else a new one.
 */
async function nextEntry(redis: Redis, stream: string, opts: ServeOptions, held: ReadonlySet<string> | undefined): Promise<Taken | undefined> {
  const since = performance.now();
  try {
    // [id, consumer, idle, deliveries] of entries idle that long; enough of them to get past those held here.
    const idle = held ? ((await redis.call('XPENDING', stream, WORKERS, 'IDLE', String(opts.claimIdleMs), '-', '+', String(held.size + 1))) as [string, string, number, number][]) : [];
    const orphan = idle.find(([id]) => !held!.has(id));
    if (orphan) {
      // XCLAIM checks the idle time again: of the readers racing for the entry, one gets it (and gone when its worker finished it meanwhile).
      const taken = rangeEntries(await redis.callBuffer('XCLAIM', stream, WORKERS, opts.consumer, String(opts.claimIdleMs), orphan[0]))[0];
      if (!taken) return undefined;
      const deliveries = Number(orphan[3]) + 1;
      logEvent('worker.claimed', { stream, entry: taken.id, deliveries });
      return { entry: taken, deliveries, since };
    }
    const reply = await redis.callBuffer('XREADGROUP', 'GROUP', WORKERS, opts.consumer, 'COUNT', '1', 'BLOCK', String(opts.blockMs ?? 1000), 'STREAMS', stream, '>');
    const entry = entriesOf(reply)[0];
    return entry ? { entry, deliveries: 1, since } : undefined;
  } catch (e) {
    if (opts.abandon.aborted) return undefined;
    // The coordinator is (re)creating the task's stream, or Redis came back without it: wait for it.
    if (!RESTARTED_STREAM.test((e as Error).message)) logEvent('worker.read_failed', { stream, error: (e as Error).message });
    await sleep(opts.blockMs ?? 1000, undefined, { signal: opts.signal }).catch(() => undefined);
    return undefined;
  }
}
