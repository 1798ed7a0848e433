import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { concatMap, map, type OperatorFunction } from 'rxjs';
import { UserError } from '@fisher-merge/core';
import type { SourceBatch, SourcePosition } from './source-batch.ts';
import { DEFAULT_MAX_LENGTH, type TaskSpec } from './tasks.ts';
import { batchTexts, type EncodedRows, type TokenizeOptions } from './tokenize.ts';

/** @internal */
export interface EncodeRequest {
  id: number;
  texts: string[];
  pairs: string[] | undefined;
  maxLength: number;
}

/** @internal */
export type EncodeReply = { id: number; rows: EncodedRows } | { id: number; error: { message: string; user: boolean } };

interface Job {
  request: EncodeRequest;
  resolve: (rows: EncodedRows) => void;
  reject: (error: Error) => void;
}

// From the .ts sources (tsx, vitest) a thread first registers tsx's loader; the compiled worker runs as is.
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './tokenizer-worker-tsx.mjs' : './tokenizer-worker.js', import.meta.url);

/**
 * Tokenizer threads (node:worker_threads), one tokenizer per thread: `encode` hands rows to the
 * next idle thread and resolves with their ids, so callers that await results in request order get
 * them in row order whatever thread finished first.
 */
export class TokenizerPool {
  private readonly idle: Worker[] = [];
  private readonly queue: Job[] = [];
  private readonly running = new Map<number, { job: Job; worker: Worker }>();
  private nextId = 0;
  private failure: Error | undefined;

  /** `threads` defaults to the cores Node may use (os.availableParallelism()). */
  constructor(modelDir: string, readonly threads: number = availableParallelism()) {
    if (!Number.isInteger(threads) || threads < 1) throw new UserError(`tokenizer threads must be an integer >= 1, got ${threads}`);
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(WORKER_URL, { workerData: { modelDir } });
      worker.on('message', (reply: EncodeReply) => this.settle(worker, reply));
      worker.on('error', (error) => this.fail(error));
      this.idle.push(worker);
    }
  }

  encode(texts: string[], pairs: string[] | undefined, maxLength: number): Promise<EncodedRows> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.queue.push({ request: { id: this.nextId++, texts, pairs, maxLength }, resolve, reject });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.idle, ...[...this.running.values()].map((r) => r.worker)].map((w) => w.terminate()));
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const worker = this.idle.pop()!;
      const job = this.queue.shift()!;
      this.running.set(job.request.id, { job, worker });
      worker.postMessage(job.request);
    }
  }

  private settle(worker: Worker, reply: EncodeReply): void {
    const { job } = this.running.get(reply.id)!;
    this.running.delete(reply.id);
    this.idle.push(worker);
    if ('rows' in reply) job.resolve(reply.rows);
    else job.reject(reply.error.user ? new UserError(reply.error.message) : new Error(reply.error.message));
    this.dispatch();
  }

  /** A thread that dies (its tokenizer failed to load, say) fails every pending and later request. */
  private fail(error: Error): void {
    this.failure = error instanceof UserError ? error : new UserError(`tokenizer thread failed: ${error.message}`);
    for (const { job } of this.running.values()) job.reject(this.failure);
    for (const job of this.queue.splice(0)) job.reject(this.failure);
    this.running.clear();
  }
}

/** A source batch tokenized off the main thread: ids in list layout, labels (when read) and global row ids. */
export interface TokenizedRows {
  source: SourcePosition;
  rows: EncodedRows;
  labels: Float32Array | undefined;
  rowIds: Float64Array;
}

/**
 * The `tokenize` operator on a TokenizerPool: texts and labels are read and checked here, encoding
 * runs on the pool's threads, and batches come out in input order. As many batches encode at once
 * as the source lets through (its FlowControl window), so the window should be at least the pool size.
 */
export function tokenizeOnThreads(pool: TokenizerPool, task: TaskSpec, options: TokenizeOptions = {}): OperatorFunction<SourceBatch, TokenizedRows> {
  const maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  if (!Number.isInteger(maxLength) || maxLength < 1) throw new UserError(`max length must be an integer >= 1, got ${maxLength}`);
  const labels = options.labels ?? true;
  return (batches) =>
    batches.pipe(
      map((item) => {
        const { texts, pairs, ...rest } = batchTexts(task, item, labels);
        const encoded = pool.encode(texts, pairs, maxLength);
        // Awaited in order below; a failure surfaces there, not as an unhandled rejection meanwhile.
        encoded.catch(() => undefined);
        return { source: item.source, encoded, ...rest };
      }),
      concatMap(async ({ encoded, ...rest }) => ({ ...rest, rows: await encoded })),
    );
}
