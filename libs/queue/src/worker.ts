import type { Redis } from 'ioredis';
import { logEvent, UserError, type TokenBatch } from '@fisher-merge/core';
import type { FisherContribution } from '@fisher-merge/fisher';
import { readBatch, resultFields } from './codec.ts';
import type { JobAnnouncement } from './coordinator.ts';
import { jobKeys, WORKERS } from './keys.ts';
import { entriesOf, type StreamEntry } from './redis.ts';

/** The job a coordinator announced under `prefix`; a clear error when none did (a wrong prefix, or no coordinator yet). */
export async function readJob(redis: Redis, prefix: string, url: string): Promise<JobAnnouncement> {
  const job = await redis.hgetall(jobKeys(prefix).job);
  if (!job.run || !job.tasks) throw new UserError(`no stream coordinator has announced a job with prefix '${prefix}' on ${url} (queue.prefix); start 'fisher-merge stream CONFIG' first`);
  return { run: job.run, mode: job.mode as JobAnnouncement['mode'], tasks: JSON.parse(job.tasks) as JobAnnouncement['tasks'] };
}

export interface ServeOptions {
  /** This worker's consumer name in the group (host:pid). */
  consumer: string;
  /** Entries another consumer left unacknowledged this long are taken over. */
  claimIdleMs: number;
  /** Ends the loop after the batch in hand. */
  signal: AbortSignal;
  /** How long one blocking read waits for a new entry (it also bounds how late a stop is noticed). */
  blockMs?: number;
}

/**
 * A worker's loop for one task: takes a batch (first an entry a dead worker left pending longer than
 * `claimIdleMs`, else a new one), computes its contribution, and in one MULTI writes the result,
 * acknowledges and deletes the entry and counts it for this worker. A worker killed mid-batch leaves
 * its entry pending for another to claim; if it was only slow, its result and the other's both
 * arrive and the coordinator counts the first.
 */
export async function serveTask(redis: Redis, prefix: string, task: string, compute: (tokens: TokenBatch) => Promise<FisherContribution>, opts: ServeOptions): Promise<number> {
  const k = jobKeys(prefix).task(task);
  let served = 0;
  while (!opts.signal.aborted) {
    let entry: StreamEntry | undefined;
    try {
      entry = await nextEntry(redis, k.batches, opts);
    } catch (e) {
      if (!RESTARTED_STREAM.test((e as Error).message)) throw e;
      // The coordinator is (re)creating the task's stream: wait for it.
      await new Promise((resolve) => setTimeout(resolve, opts.blockMs ?? 1000));
      continue;
    }
    if (!entry) continue;
    const batch = readBatch(entry);
    const contribution = await compute(batch.tokens);
    try {
      await redis
        .multi()
        .xadd(k.results, '*', ...resultFields(batch, opts.consumer, contribution))
        .xack(k.batches, WORKERS, entry.id)
        .xdel(k.batches, entry.id)
        .hincrby(k.done, opts.consumer, 1)
        .exec();
    } catch (e) {
      // Lost with the connection (a Redis restart): the entry stays pending and is claimed again.
      logEvent('worker.result_lost', { task, seq: batch.seq, error: (e as Error).message });
      continue;
    }
    served++;
    logEvent('worker.batch', { task, seq: batch.seq, examples: batch.tokens.batchSize });
  }
  return served;
}

/** Errors of a read whose stream or group the coordinator just dropped to start a new run. */
const RESTARTED_STREAM = /NOGROUP|UNBLOCKED/;

async function nextEntry(redis: Redis, stream: string, opts: ServeOptions): Promise<StreamEntry | undefined> {
  const claimed = (await redis.callBuffer('XAUTOCLAIM', stream, WORKERS, opts.consumer, String(opts.claimIdleMs), '0-0', 'COUNT', '1')) as [Buffer, unknown[]];
  const taken = entriesOf([stream, claimed[1]]);
  if (taken.length > 0) {
    logEvent('worker.claimed', { stream, entry: taken[0]!.id });
    return taken[0];
  }
  const reply = await redis.callBuffer('XREADGROUP', 'GROUP', WORKERS, opts.consumer, 'COUNT', '1', 'BLOCK', String(opts.blockMs ?? 1000), 'STREAMS', stream, '>');
  return entriesOf(reply)[0];
}
