import { concatMap, Observable, tap, type MonoTypeOperatorFunction } from 'rxjs';

/**
 * Credit-based backpressure for push-based RxJS pipelines.
 *
 * A source takes one credit (`acquire`) before reading each batch; the sink gives credits back
 * (`release(n)`) once the work derived from those batches is finished — a model batch carries the
 * source batches it completes (`ModelBatch.completedSources`), and the `releaseCredits` operator at
 * the end of a pipeline releases that many.
 * Hence at most `window` source batches exist between "read" and "done", however slow the sink:
 * memory is bounded by `window` source batches plus what the batching operator buffers.
 *
 * The window must be large enough for the batcher to fill one batch (or one bucketing window of
 * batches) from `window` source batches, otherwise nothing ever completes. With `grow`, `padBatches`
 * widens the window by one source batch each time every credit is held by rows waiting for a batch,
 * so the window sizes itself to the batch size and the file's row groups (memory stays one batch of
 * rows plus the read-ahead); without it, `padBatches` fails instead of hanging.
 */
export class FlowControl {
  private held = 0;
  private peak = 0;
  private size: number;
  private readonly waiting: Array<() => void> = [];
  private readonly growable: boolean;

  constructor(window: number, options: { grow?: boolean } = {}) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError(`flow-control window must be an integer >= 1, got ${window}`);
    this.size = window;
    this.growable = options.grow ?? false;
  }

  /** Source batches that may be in flight. */
  get window(): number {
    return this.size;
  }

  /** One more credit, for a batcher holding every credit that still needs rows; false when the window is fixed. */
  widen(): boolean {
    if (!this.growable) return false;
    this.size++;
    this.grant();
    return true;
  }

  /** Credits taken and not yet released. */
  get inFlight(): number {
    return this.held;
  }

  /** Highest `inFlight` seen so far. */
  get maxInFlight(): number {
    return this.peak;
  }

  /** Resolves once a credit is available; rejects if `signal` aborts first (the source was unsubscribed). */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.held < this.size) {
      this.take();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const i = this.waiting.indexOf(grant);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(grant);
    });
  }

  release(n = 1): void {
    if (!Number.isInteger(n) || n < 0 || n > this.held) throw new RangeError(`cannot release ${n} credits: ${this.held} in flight`);
    this.held -= n;
    this.grant();
  }

  // Hand free credits straight to waiters so a later acquire cannot overtake them.
  private grant(): void {
    while (this.held < this.size && this.waiting.length > 0) {
      this.take();
      this.waiting.shift()!();
    }
  }

  private take(): void {
    this.held++;
    if (this.held > this.peak) this.peak = this.held;
  }
}

/**
 * The one place a pipeline gives credits back: after each item has passed every operator before
 * this one, releases the credits of the source batches it finished (default: a model batch's
 * `completedSources`, or the `batch` of an update carrying one).
 */
export function releaseCredits<T>(flow: FlowControl | undefined, credits: (item: T) => number = completedSourceCount as (item: T) => number): MonoTypeOperatorFunction<T> {
  if (!flow) return (source) => source;
  return tap((item) => flow.release(credits(item)));
}

/**
 * Takes one credit before passing each item on, in order: items read ahead without credits (a file
 * checked whole before any of its rows is used) enter the pipeline no faster than a source would.
 */
export function withCredits<T>(flow: FlowControl): MonoTypeOperatorFunction<T> {
  return concatMap(
    (item) =>
      new Observable<T>((subscriber) => {
        const unsubscribed = new AbortController();
        flow.acquire(unsubscribed.signal).then(
          () => {
            subscriber.next(item);
            subscriber.complete();
          },
          () => undefined, // unsubscribed while waiting: nobody to tell
        );
        return () => unsubscribed.abort();
      }),
  );
}

interface CompletesSources {
  completedSources: readonly unknown[];
}

function completedSourceCount(item: CompletesSources | { batch: CompletesSources }): number {
  return ('completedSources' in item ? item : item.batch).completedSources.length;
}
