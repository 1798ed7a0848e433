import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { Subscription, type SchedulerAction, type SchedulerLike } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it, vi } from 'vitest';
import { loadStreamConfig, outLayout, runStreamJob } from '@fisher-merge/stream-job';
import { publishParquet, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

/**
 * The TestScheduler's clock, with rescheduled actions (each tick of an `interval`) that replace one
 * another. rxjs's VirtualAction chains every reschedule to the one before it, so a job that ticks for
 * a long virtual time (a loaded machine makes the engine's real time long, and virtual time moves on
 * meanwhile) builds a chain thousands deep whose unsubscription overflows the stack; the lost
 * completion then hangs the job. asyncScheduler, the job's default, reuses one action instead.
 */
function flatScheduler(scheduler: TestScheduler): SchedulerLike {
  return {
    now: () => scheduler.now(),
    schedule<T>(work: (this: SchedulerAction<T>, state?: T) => void, delay = 0, state?: T): Subscription {
      const handle = new Subscription();
      let current: Subscription | undefined;
      const plan = (s: T | undefined, d: number): void => {
        if (current) {
          current.unsubscribe();
          handle.remove(current);
        }
        current = scheduler.schedule(() => work.call(action, s), d);
        handle.add(current);
      };
      const action: SchedulerAction<T> = Object.assign(handle, {
        schedule: (s?: T, d = 0) => {
          plan(s, d);
          return handle;
        },
      });
      plan(state, delay);
      return handle;
    },
  };
}

describe('stream job on a virtual clock', () => {
  it('ticks, progress lines, status times and drain-idle detection all follow the scheduler it is given', async () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    publishParquet(path.join(watch, 'part-0.parquet'), await taskRows('sst2', 20));
    const config = await loadStreamConfig(writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch }], { log_interval_s: 1 }));
    const scheduler = new TestScheduler((a, b) => expect(a).toEqual(b));
    const logged: { event: string; at: number }[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array) => {
      for (const line of String(chunk).split('\n').filter((l) => l.startsWith('{'))) logged.push({ event: (JSON.parse(line) as { event: string }).event, at: scheduler.now() });
      return true;
    }) as typeof process.stderr.write);
    let settled = false;
    const running = runStreamJob(config, { scheduler: flatScheduler(scheduler), statusIntervalMs: 100, exitWhenIdleMs: 3000 }).finally(() => (settled = true));
    // Virtual time moves only here, 10 ms per turn of the event loop (file reads and the engine run
    // meanwhile): each flush runs the timers due by then.
    for (let virtual = 10; !settled; virtual += 10) {
      await turn();
      scheduler.maxFrames = virtual;
      scheduler.flush();
    }
    const result = await running.finally(() => spy.mockRestore());
    expect(result.stats.sst2!.examples).toBe(20);
    expect(result.stoppedBy).toBe('drained');
    const at = (event: string) => logged.filter((e) => e.event === event).map((e) => e.at);
    // The input is finished once the directory stayed empty for 3000 virtual ms.
    expect(at('stream.stopped')[0]).toBeGreaterThanOrEqual(3000);
    // Progress every log_interval_s (1 s) of virtual time, on 100 ms ticks.
    const progress = at('stream.progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    for (const t of progress) expect(t % 100).toBe(0);
    progress.slice(1).forEach((t, i) => expect(t - progress[i]!).toBeGreaterThanOrEqual(1000));
    // status.json's times are the scheduler's (virtual time starts at the epoch).
    const status = JSON.parse(readFileSync(outLayout(config.out).status, 'utf8'));
    expect(status.running).toBe(false);
    expect(new Date(status.updated).getTime()).toBe(scheduler.now());
    expect(new Date(status.started).getTime()).toBe(0);
  });
});
