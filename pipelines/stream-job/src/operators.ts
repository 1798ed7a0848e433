import { promises as fs } from 'node:fs';
import { connect, defer, filter, from, merge, Observable, tap, type ObservableInput, type OperatorFunction, type Subscription } from 'rxjs';

/**
 * Like `exhaustMap`, one inner at a time, but the values that arrive while an inner runs are not
 * dropped: they collapse into one (`collapse(waiting, arriving)`, by default the latest) that runs
 * once the inner ends. Completes when the source has completed and no inner is running or waiting.
 */
export function exhaustMapWithTrailing<T, R>(project: (value: T, index: number) => ObservableInput<R>, collapse: (waiting: T, arriving: T) => T = (_, arriving) => arriving): OperatorFunction<T, R> {
  return (source) =>
    new Observable<R>((subscriber) => {
      let index = 0;
      let inner: Subscription | undefined;
      let running = false;
      let trailing: { value: T } | undefined;
      let sourceDone = false;
      const run = (value: T): void => {
        running = true;
        let input: ObservableInput<R>;
        try {
          input = project(value, index++);
        } catch (e) {
          subscriber.error(e);
          return;
        }
        inner = from(input).subscribe({
          next: (r) => subscriber.next(r),
          error: (e: unknown) => subscriber.error(e),
          complete: () => {
            running = false;
            const waiting = trailing;
            trailing = undefined;
            if (waiting) run(waiting.value);
            else if (sourceDone) subscriber.complete();
          },
        });
      };
      const outer = source.subscribe({
        next: (value) => {
          if (!running) run(value);
          else trailing = { value: trailing ? collapse(trailing.value, value) : value };
        },
        error: (e: unknown) => subscriber.error(e),
        complete: () => {
          sourceDone = true;
          if (!running) subscriber.complete();
        },
      });
      return () => {
        outer.unsubscribe();
        inner?.unsubscribe();
      };
    });
}

/**
 * `exhaustMapWithTrailing` with an accumulator, as `mergeScan` with a concurrency of one: each run
 * starts from the value the previous runs emitted last (`seed` at first) and emits the next ones.
 * The accumulator lives per subscription.
 */
export function exhaustScanWithTrailing<T, A>(accumulate: (acc: A, value: T) => ObservableInput<A>, seed: A, collapse?: (waiting: T, arriving: T) => T): OperatorFunction<T, A> {
  return (source) =>
    defer(() => {
      let acc = seed;
      return source.pipe(exhaustMapWithTrailing((value) => from(accumulate(acc, value)).pipe(tap((next) => (acc = next))), collapse));
    });
}

/**
 * Applies `operator` to the items `passes` rejects; the others go straight on, as they arrive (so
 * ahead of items the operator still holds). Completes when both ways have.
 */
export function letPass<P, A, B>(passes: (item: A | P) => item is P, operator: OperatorFunction<A, B>): OperatorFunction<A | P, B | P> {
  return connect((items) => merge(items.pipe(filter(passes)), items.pipe(filter((item): item is A => !passes(item)), operator)));
}

/** True if `file` existed, which it no longer does (an operator's control file, acted on once). */
export async function takeControlFile(file: string): Promise<boolean> {
  try {
    await fs.rm(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}
