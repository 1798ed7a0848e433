import { randomUUID } from 'node:crypto';
import { concatMap, Observable, takeUntil, type OperatorFunction } from 'rxjs';
import type { Redis } from 'ioredis';
import { FlowControl, type ModelBatch } from '@fisher-merge/data';
import type { ContributedBatch, FisherContribution } from '@fisher-merge/fisher';
import { logEvent } from '@fisher-merge/core';
import { batchFields, readBatch, readResult } from './codec.ts';
import { jobKeys, WORKERS } from './keys.ts';
import { entriesOf, rangeEntries } from './redis.ts';

/** What workers check before serving a job: the coordinator's run and, per task, what it accumulates. */
export interface JobAnnouncement {
  run: string;
  mode: 'batch' | 'example';
  tasks: Record<string, { modelFingerprint: string }>;
}

/**
 * The coordinator's side of a job. Each start is a new run (a random id): the streams of an earlier
 * run are dropped, and the batches not folded into its checkpoint are re-read from the sources and
 * appended again under the new run, so results of the old run, still arriving from workers, are
 * recognised by their run id and ignored.
 */
export class QueueCoordinator {
  readonly run = randomUUID();
  private readonly keys: ReturnType<typeof jobKeys>;

  constructor(private readonly redis: Redis, prefix: string) {
    this.keys = jobKeys(prefix);
  }

  async announce(job: Omit<JobAnnouncement, 'run'>): Promise<void> {
    for (const task of Object.keys(job.tasks)) {
      const k = this.keys.task(task);
      await this.redis.del(k.batches, k.results);
      await this.redis.call('XGROUP', 'CREATE', k.batches, WORKERS, '0', 'MKSTREAM');
    }
    await this.redis.hset(this.keys.job, { run: this.run, mode: job.mode, tasks: JSON.stringify(job.tasks) });
  }

  /** Announces a published version on `<prefix>:versions` for whoever consumes versions. */
  async announceVersion(version: number, dir: string, manifest: unknown): Promise<void> {
    await this.redis.xadd(this.keys.versions, '*', 'version', String(version), 'path', dir, 'manifest', JSON.stringify(manifest));
  }

  /**
   * Appends each batch (with its sequence number) to the task's stream instead of computing it, and
   * emits the workers' contributions in sequence order, each once however often it arrives. At most
   * `maxPending` batches are appended and not yet folded: beyond that, appending waits. `stop$`
   * ends it at once, leaving the batches still out to be re-read by the next run.
   *
   * A batch whose entry and result are both gone from Redis (lost in a crash of a Redis that
   * persists only every second, say) is appended again once nothing has been folded for
   * `repairAfterMs` and no result is waiting: at worst a batch is computed twice, and its second
   * result is ignored like any repeat.
   */
  contributions(task: string, maxPending: number, stop$: Observable<unknown>, repairAfterMs: number): OperatorFunction<ModelBatch, ContributedBatch<ModelBatch>> {
    const k = this.keys.task(task);
    return (source) =>
      new Observable<ContributedBatch<ModelBatch>>((subscriber) => {
        const credits = new FlowControl(maxPending);
        const out = new Map<number, ModelBatch>();
        const arrived = new Map<number, FisherContribution>();
        let appended = 0;
        // Batches whose XADD has completed: XADDs run one at a time, so they are the seqs below it.
        let added = 0;
        let next = 0;
        let foldedAt = performance.now();
        let sourceDone = false;
        const closed = new AbortController();
        const fold = (): void => {
          for (let c = arrived.get(next); c !== undefined; c = arrived.get(next)) {
            const batch = out.get(next)!;
            arrived.delete(next);
            out.delete(next);
            next++;
            foldedAt = performance.now();
            credits.release();
            subscriber.next({ batch, contribution: c });
          }
          if (sourceDone && next === appended) subscriber.complete();
        };
        // XREAD blocks its connection: results are read on a connection of their own.
        const reader = this.redis.duplicate();
        reader.on('error', () => undefined);
        const repair = async (): Promise<void> => {
          const inStream = new Set(rangeEntries(await this.redis.callBuffer('XRANGE', k.batches, '-', '+')).map(readBatch).filter((b) => b.run === this.run).map((b) => b.seq));
          for (let seq = next; seq < added; seq++) {
            if (arrived.has(seq) || inStream.has(seq)) continue;
            logEvent('queue.batch_reappended', { task, seq });
            await this.redis.xadd(k.batches, '*', ...batchFields(this.run, seq, out.get(seq)!.tokens));
          }
          foldedAt = performance.now();
        };
        void (async () => {
          let lastId = '0-0';
          try {
            while (!closed.signal.aborted) {
              const entries = entriesOf(await reader.callBuffer('XREAD', 'COUNT', '256', 'BLOCK', '1000', 'STREAMS', k.results, lastId));
              for (const entry of entries) {
                lastId = entry.id;
                const result = readResult(entry);
                if (result.run === this.run && result.seq >= next && out.has(result.seq)) arrived.set(result.seq, result.contribution);
              }
              if (entries.length > 0) await this.redis.xdel(k.results, ...entries.map((e) => e.id));
              fold();
              if (entries.length === 0 && added > next && performance.now() - foldedAt > repairAfterMs) await repair();
            }
          } catch (e) {
            if (!closed.signal.aborted) subscriber.error(e);
          }
        })();
        const appending = source
          .pipe(
            concatMap(async (batch) => {
              await credits.acquire(closed.signal);
              const seq = appended++;
              out.set(seq, batch);
              await this.redis.xadd(k.batches, '*', ...batchFields(this.run, seq, batch.tokens));
              added = seq + 1;
            }),
          )
          .subscribe({
            error: (e: unknown) => subscriber.error(e),
            complete: () => {
              sourceDone = true;
              fold();
            },
          });
        return () => {
          closed.abort();
          appending.unsubscribe();
          reader.disconnect();
        };
      }).pipe(takeUntil(stop$));
  }
}
