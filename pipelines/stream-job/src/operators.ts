import { promises as fs } from 'node:fs';
import { from, Observable, type ObservableInput, type OperatorFunction, type Subscription } from 'rxjs';

/**
 * Like `exhaustMap`, one inner at a time, but the values that arrive while an inner runs are not
 * dropped: the latest of them runs once the inner ends (requests collapse into one more). Completes
 * when the source has completed and no inner is running or waiting.
 */
export function exhaustMapWithTrailing<T, R>(project: (value: T, index: number) => ObservableInput<R>): OperatorFunction<T, R> {
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
          if (running) trailing = { value };
          else run(value);
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
