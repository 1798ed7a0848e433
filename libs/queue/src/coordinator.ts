import { randomUUID } from 'node:crypto';
import {
  asyncScheduler,
  catchError,
  EMPTY,
  concat,
  concatMap,
  defer,
  endWith,
  exhaustMap,
  finalize,
  fromEvent,
  map,
  merge,
  mergeMap,
  type Observable,
  type OperatorFunction,
  repeat,
  scan,
  type SchedulerLike,
  Subject,
  takeUntil,
  takeWhile,
  tap,
} from 'rxjs';
import type { Redis } from 'ioredis';
import { FlowControl, type ModelBatch } from '@fisher-merge/data';
import type { ContributedBatch, DeadBatch } from '@fisher-merge/fisher';
import type { JobMetrics } from '@fisher-merge/metrics';
import { logEvent } from '@fisher-merge/core';
import { batchFields, readDeadLetter, readResult, type DeadLetter, type QueuedResult } from './codec.ts';
import { jobKeys, WORKERS } from './keys.ts';
import { whileQuiet } from './timing.ts';
import { EntryError, giveUpWhenLost, rangeEntries, streamEntries, type StreamEntry } from './redis.ts';

/**
 * What workers check before serving a job: the coordinator's run and, per task running now, what it
 * accumulates and the run its batch entries carry (each time a task joins, a run of its own).
 */
export interface JobAnnouncement {
  run: string;
  mode: 'batch' | 'example';
  tasks: Record<string, { modelFingerprint: string; run: string }>;
}

/** What the coordinator emits per batch, in sequence order: its contribution, or why it has none. */
export type QueuedContribution = ContributedBatch<ModelBatch> | DeadBatch<ModelBatch>;

export interface ContributionOptions {
  /** Batches appended and not yet folded; appending waits beyond it. */
  maxPending: number;
  /** Nothing folded for this long: batches lost from Redis are appended again (and a silent queue is reported). */
  repairAfterMs: number;
  /** Ends the contributions at once, leaving the batches still out to be re-read by the next run. */
  stop$: Observable<unknown>;
  /** Values per contribution: numLayers x numHeads and numLayers x intermediateSize (a result of another shape is refused). */
  shape: { head: number; neuron: number };
  /** The connection may stay lost this long before the job stops with one clear line. */
  connectTimeoutS: number;
  /** How long one read of the results waits on Redis (default 5 s; teardown cuts it short). */
  blockMs?: number;
  /** Drives the repair and give-up timers (a TestScheduler in tests). */
  scheduler?: SchedulerLike;
  metrics?: JobMetrics;
}

/** What reaches the reordering scan: the coordinator's own appends, and the replies from Redis. */
type QueueEvent =
  | { kind: 'out'; seq: number; batch: ModelBatch }
  | { kind: 'added'; seq: number; id: string }
  | { kind: 'end' }
  | { kind: 'result'; entry: string; result: QueuedResult }
  | { kind: 'refused'; entry: string; reason: string }
  | { kind: 'dead'; letter: DeadLetter };

/** The reordering state of one subscription: batches out, replies waiting for an earlier seq, and the seqs emitted by the last step. */
interface Reorder {
  /** Next seq to emit. */
  next: number;
  /** Seqs registered (the batch is kept before its XADD, so no reply can precede it). */
  appended: number;
  /** Seqs whose XADD completed: XADDs run one at a time, so they are the seqs below it. */
  added: number;
  ended: boolean;
  out: Map<number, ModelBatch>;
  /** Batch entry ids this run appended (a batch appended again has two), by seq and back. */
  entries: Map<string, number>;
  ids: Map<number, string[]>;
  arrived: Map<number, QueuedContribution>;
  ready: QueuedContribution[];
  /** Seqs of results refused because this run never appended them. */
  strays: Set<number>;
  /** Scheduler time of the last fold (for the no-workers line). */
  foldedAt: number;
}

/**
 * The coordinator's side of a job. Each start is a new run (a random id), and so is each time a task
 * joins it: the task's streams of an earlier run are dropped, and the batches not folded into its
 * checkpoint are re-read from the sources and appended again under the new run, so results of the
 * old run, still arriving from workers, are recognised by their run id and ignored. The job is
 * announced again whenever a task joins or leaves, and workers follow it.
 */
export class QueueCoordinator {
  readonly run = randomUUID();
  private readonly keys: ReturnType<typeof jobKeys>;
  private tasks: JobAnnouncement['tasks'] = {};

  constructor(private readonly redis: Redis, prefix: string, private readonly url: string, private readonly mode: JobAnnouncement['mode']) {
    this.keys = jobKeys(prefix);
  }

  /** A task joins the job: its streams start afresh under a run of its own, which is returned once announced. */
  async join(task: string, modelFingerprint: string): Promise<string> {
    const run = randomUUID();
    const k = this.keys.task(task);
    await this.redis.del(k.batches, k.results);
    await this.redis.call('XGROUP', 'CREATE', k.batches, WORKERS, '0', 'MKSTREAM');
    this.tasks = { ...this.tasks, [task]: { modelFingerprint, run } };
    await this.announce();
    return run;
  }

  /** The task's run `run` ends: the job is announced without it, unless it joined again meanwhile. */
  async leave(task: string, run: string): Promise<void> {
    if (this.tasks[task]?.run !== run) return;
    this.tasks = Object.fromEntries(Object.entries(this.tasks).filter(([name]) => name !== task));
    // Best effort: a Redis away now gets the job again at the next join or reconnection, and a
    // worker still serving the task meanwhile only computes what nobody folds.
    if (this.redis.status === 'ready') await this.announce().catch(() => undefined);
  }

  private async announce(): Promise<void> {
    await this.redis.hset(this.keys.job, { run: this.run, mode: this.mode, tasks: JSON.stringify(this.tasks) });
  }

  /** After a reconnection: a Redis that restarted without its data lost the group and the job; both come back, nothing is dropped. */
  private async reannounce(task: string): Promise<void> {
    await this.redis.call('XGROUP', 'CREATE', this.keys.task(task).batches, WORKERS, '0', 'MKSTREAM').catch((e: Error) => {
      if (!/BUSYGROUP/.test(e.message)) throw e;
    });
    await this.announce();
  }

  /** Announces a published version on `<prefix>:versions` for whoever consumes versions. */
  async announceVersion(version: number, dir: string, manifest: unknown): Promise<void> {
    await this.redis.xadd(this.keys.versions, '*', 'version', String(version), 'path', dir, 'manifest', JSON.stringify(manifest));
  }

  /**
   * Appends each batch (with its sequence number and the task's `run`, from `join`) to the task's stream instead of computing it, and
   * emits, in sequence order and each once however often it arrives, the workers' contribution or,
   * for a batch a worker dead-lettered, a DeadBatch. At most `maxPending` batches are out.
   *
   * One Observable: the appends, the replies read from Redis (results and dead letters) and the
   * repairs are events of one `scan` that reorders them; the repair is a timer restarted by every
   * fold. A batch whose entry and result are both gone from Redis (a crash of a Redis that persists
   * only every second, or a restart without persistence) is appended again once nothing has been
   * folded for `repairAfterMs`, or at once after a reconnection: at worst a batch is computed
   * twice, and its second result is ignored like any repeat. Unsubscribing is the cancellation:
   * it stops the appends and the reads and closes the read connection.
   */
  contributions(task: string, run: string, options: ContributionOptions): OperatorFunction<ModelBatch, QueuedContribution> {
    const k = this.keys.task(task);
    const scheduler = options.scheduler ?? asyncScheduler;
    return (source) =>
      defer(() => {
        const state: Reorder = { next: 0, appended: 0, added: 0, ended: false, out: new Map(), entries: new Map(), ids: new Map(), arrived: new Map(), ready: [], strays: new Set(), foldedAt: scheduler.now() };
        const credits = new FlowControl(options.maxPending);
        const closed = new AbortController();
        const folded$ = new Subject<void>();
        // XREAD blocks its connection: replies are read on a connection of their own.
        const reader = this.redis.duplicate();
        reader.on('error', () => undefined);

        // Each step starts when subscribed: the XADD waits for the credit, and the credit for the batch before.
        const appends$ = source.pipe(
          concatMap((batch, seq) => concat(
            defer(() => credits.acquire(closed.signal)).pipe(map((): QueueEvent => ({ kind: 'out', seq, batch }))),
            defer(() => this.redis.xadd(k.batches, '*', ...batchFields(run, seq, batch.tokens))).pipe(map((id): QueueEvent => ({ kind: 'added', seq, id: id! }))),
          )),
          endWith<QueueEvent>({ kind: 'end' }),
        );

        const replies$ = readReplies(reader, this.redis, k.results, k.dead, options.blockMs ?? 5000);

        /** Appends again the batches out whose entry is gone and whose reply has not arrived. */
        const repair = async (): Promise<QueueEvent[]> => {
          const present = new Set(rangeEntries(await this.redis.callBuffer('XRANGE', k.batches, '-', '+')).map((e) => e.id));
          const again: QueueEvent[] = [];
          for (let seq = state.next; seq < state.added; seq++) {
            // Folds go on meanwhile: a seq may have been folded since the loop began.
            if (seq < state.next || state.arrived.has(seq) || (state.ids.get(seq) ?? []).some((id) => present.has(id))) continue;
            logEvent('queue.batch_reappended', { task, seq });
            const id = (await this.redis.xadd(k.batches, '*', ...batchFields(run, seq, state.out.get(seq)!.tokens)))!;
            again.push({ kind: 'added', seq, id });
          }
          return again;
        };
        /** Batches waiting and none taken by any worker: say so (at the repair's rate), since nothing else would. */
        const reportSilence = async (): Promise<void> => {
          if (state.added <= state.next) return;
          const [pending] = (await this.redis.call('XPENDING', k.batches, WORKERS)) as [number];
          const waiting = await this.redis.xlen(k.batches);
          if (Number(pending) === 0 && waiting > 0) {
            logEvent('queue.no_workers', { task, waiting_batches: waiting, idle_s: Math.round((scheduler.now() - state.foldedAt) / 1000), hint: `no worker has taken a batch; start 'fisher-merge worker CONFIG' with the same queue.prefix` });
          }
        };
        /** A repair that failed (Redis went away meanwhile, say) is logged; the next tick tries again. */
        const repairing = (work: () => Promise<QueueEvent[]>): Observable<QueueEvent> =>
          defer(work).pipe(
            mergeMap((events) => events),
            catchError((e: unknown) => {
              logEvent('queue.repair_failed', { task, error: (e as Error).message });
              return EMPTY;
            }),
          );
        const repairs$ = folded$.pipe(
          whileQuiet(options.repairAfterMs, scheduler),
          exhaustMap(() => repairing(() => reportSilence().then(repair))),
        );
        // A reconnection may follow a Redis that lost everything: group and job first, then repair at once.
        const reconnected$ = fromEvent(this.redis, 'ready').pipe(exhaustMap(() => repairing(() => this.reannounce(task).then(repair))));

        return merge(appends$, replies$, repairs$, reconnected$, giveUpWhenLost(this.redis, this.url, 'stream coordinator', options.connectTimeoutS, scheduler)).pipe(
          scan((s, event) => step(s, event, run, task, options.shape, scheduler), state),
          takeWhile((s) => !(s.ended && s.next === s.appended), true),
          concatMap((s) => s.ready.splice(0)),
          tap((item) => {
            credits.release();
            options.metrics?.pending.set({ task }, state.appended - state.next);
            if ('dead' in item) options.metrics?.dead.inc({ task });
            folded$.next();
          }),
          finalize(() => {
            closed.abort();
            reader.disconnect();
          }),
        );
      }).pipe(takeUntil(options.stop$));
  }
}

/** Reads results (deleting them once read) and dead letters from the start, as events, until unsubscribed. */
function readReplies(reader: Redis, redis: Redis, results: string, dead: string, blockMs: number): Observable<QueueEvent> {
  return defer(() => {
    const last = { [results]: '0-0', [dead]: '0-0' };
    return defer(() => reader.callBuffer('XREAD', 'COUNT', '256', 'BLOCK', String(blockMs), 'STREAMS', results, dead, last[results]!, last[dead]!)).pipe(
      concatMap(async (reply) => {
        const streams = streamEntries(reply);
        const got = streams.get(results) ?? [];
        const letters = streams.get(dead) ?? [];
        if (got.length > 0) last[results] = got.at(-1)!.id;
        if (letters.length > 0) last[dead] = letters.at(-1)!.id;
        if (got.length > 0) await redis.xdel(results, ...got.map((e) => e.id));
        return [...got.map(resultEvent), ...letters.map((e): QueueEvent => ({ kind: 'dead', letter: readDeadLetter(e) }))];
      }),
      repeat(),
      mergeMap((events) => events),
    );
  });
}

function resultEvent(entry: StreamEntry): QueueEvent {
  try {
    return { kind: 'result', entry: entry.id, result: readResult(entry) };
  } catch (e) {
    if (!(e instanceof EntryError)) throw e;
    return { kind: 'refused', entry: entry.id, reason: e.message };
  }
}

/** One event into the reordering state; the contributions now in order are left in `ready`. */
function step(s: Reorder, event: QueueEvent, run: string, task: string, shape: ContributionOptions['shape'], scheduler: SchedulerLike): Reorder {
  const refuse = (entry: string, reason: string): void => logEvent('queue.result_refused', { task, entry, reason });
  switch (event.kind) {
    case 'out':
      s.out.set(event.seq, event.batch);
      s.appended = event.seq + 1;
      break;
    case 'added':
      s.added = Math.max(s.added, event.seq + 1);
      s.entries.set(event.id, event.seq);
      s.ids.set(event.seq, [...(s.ids.get(event.seq) ?? []), event.id]);
      break;
    case 'end':
      s.ended = true;
      break;
    case 'refused':
      refuse(event.entry, event.reason);
      break;
    case 'result': {
      const { result } = event;
      // Another run's results, and repeats of a batch already in hand, are expected: dropped quietly.
      if (result.run !== run || result.seq < s.next || s.arrived.has(result.seq)) break;
      const batch = s.out.get(result.seq);
      const c = result.contribution;
      if (!batch) {
        // Two workers may have computed the same stray entry: one line for it.
        if (!s.strays.has(result.seq)) refuse(event.entry, `seq ${result.seq} is not a batch this run appended (${s.appended} so far)`);
        s.strays.add(result.seq);
      }
      else if (c.examples !== batch.tokens.batchSize) refuse(event.entry, `${c.examples} examples for a batch of ${batch.tokens.batchSize}`);
      else if (c.head.length !== shape.head || c.neuron.length !== shape.neuron) refuse(event.entry, `${c.head.length} head and ${c.neuron.length} neuron values, expected ${shape.head} and ${shape.neuron}`);
      else s.arrived.set(result.seq, { batch, contribution: c });
      break;
    }
    case 'dead': {
      // Only an entry this run appended is a batch of the job; the worker logged any other.
      const seq = s.entries.get(event.letter.entry);
      if (seq === undefined || seq < s.next || s.arrived.has(seq)) break;
      s.arrived.set(seq, { batch: s.out.get(seq)!, dead: { reason: event.letter.reason } });
      break;
    }
  }
  for (let item = s.arrived.get(s.next); item !== undefined; item = s.arrived.get(s.next)) {
    s.ready.push(item);
    s.arrived.delete(s.next);
    s.out.delete(s.next);
    for (const id of s.ids.get(s.next) ?? []) s.entries.delete(id);
    s.ids.delete(s.next);
    s.next++;
    s.foldedAt = scheduler.now();
  }
  return s;
}
