import type { Redis } from 'ioredis';
import { distinctUntilChanged, exhaustMap, filter, fromEvent, map, type Observable, of, takeUntil, timer } from 'rxjs';
import type { JobAnnouncement } from './coordinator.ts';
import { readJob } from './worker.ts';

/**
 * The job announced under `prefix`, read every `pollMs`, each time it changes (a task joined or
 * left, a new run), until `signal` aborts. A read that fails (Redis away) is skipped: the next tries again.
 */
export function jobAnnouncements(redis: Redis, prefix: string, signal: AbortSignal, pollMs = 1000): Observable<JobAnnouncement> {
  return timer(0, pollMs).pipe(
    exhaustMap(() => readJob(redis, prefix).catch(() => undefined)),
    filter((job): job is JobAnnouncement => job !== undefined),
    map((job) => ({ job, key: JSON.stringify(job) })),
    distinctUntilChanged((a, b) => a.key === b.key),
    map(({ job }) => job),
    takeUntil(signal.aborted ? of(true) : fromEvent(signal, 'abort')),
  );
}
