import { asyncScheduler, exhaustMap, map, type Observable, type OperatorFunction, type SchedulerLike, startWith, switchMap, takeUntil, timer } from 'rxjs';

/**
 * Ticks every `ms` while the source is quiet: from subscription, and again from each value (each
 * value restarts the clock). The coordinator's repair: nothing folded for a while.
 */
export function whileQuiet<T>(ms: number, scheduler: SchedulerLike = asyncScheduler): OperatorFunction<T, number> {
  return (source) => source.pipe(startWith(undefined), switchMap(() => timer(ms, ms, scheduler)));
}

/**
 * Errors with `error()` once `lost$` has fired and `back$` has not followed within `ms`; a loss
 * while one is being timed changes nothing (a reconnecting client reports each failed attempt).
 * Never emits otherwise.
 */
export function giveUpAfter(lost$: Observable<unknown>, back$: Observable<unknown>, ms: number, error: () => Error, scheduler: SchedulerLike = asyncScheduler): Observable<never> {
  return lost$.pipe(
    exhaustMap(() => timer(ms, scheduler).pipe(takeUntil(back$))),
    map(() => {
      throw error();
    }),
  );
}
