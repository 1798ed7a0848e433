import { describe, expect, it } from 'vitest';
import { concat, from, lastValueFrom, throwError } from 'rxjs';
import { logEvent, Progress, reportProgress } from '@fisher-merge/core';

/** A stderr stand-in: what was written, and whether it claims to be a terminal. */
function fakeStream(isTTY: boolean): NodeJS.WriteStream & { text: string } {
  const stream = { isTTY, text: '', write(chunk: string) { stream.text += chunk; return true; } };
  return stream as unknown as NodeJS.WriteStream & { text: string };
}

/** A clock the test moves by hand. */
function manualClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 0;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('progress meter', () => {
  it('off a terminal: JSON lines with count, total, rate and ETA, the first step at once, then one per interval, then done', () => {
    const stream = fakeStream(false);
    const clock = manualClock();
    const meter = new Progress({ label: 'fisher sst2', total: 100, stream, now: clock.now, intervalMs: 1000 });
    clock.advance(500);
    meter.add(10); // printed: the first step
    clock.advance(500);
    meter.add(10); // within the interval: not printed
    clock.advance(500);
    meter.add(20); // printed
    clock.advance(500);
    meter.add(60);
    meter.finish();
    const lines = stream.text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.event)).toEqual(['progress', 'progress', 'done']);
    expect(lines[0]).toMatchObject({ label: 'fisher sst2', examples: 10, total: 100, per_second: 20, eta_s: 4.5, elapsed_s: 0.5 });
    expect(lines[1]).toMatchObject({ examples: 40, per_second: 26.67, eta_s: 2.3 });
    expect(lines[2]).toMatchObject({ event: 'done', examples: 100, per_second: 50, eta_s: 0, elapsed_s: 2 });
    for (const l of lines) expect(typeof l.time).toBe('string');
  });

  it('on a terminal: one line redrawn in place with rate and ETA, ended by a newline', () => {
    const stream = fakeStream(true);
    const clock = manualClock();
    const meter = new Progress({ label: 'eval', total: 8, unit: 'tensors', stream, now: clock.now });
    clock.advance(1000);
    meter.add(2);
    clock.advance(1000);
    meter.finish();
    expect(stream.text).toBe('\r\x1b[2Keval: 2/8 tensors 2.0 tensors/s 1.0s ETA 3.0s\r\x1b[2Keval: 2/8 tensors 1.0 tensors/s 2.0s\n');
  });

  it('a log line on a terminal takes the meter line and shows its message; off a terminal it is JSON', () => {
    const tty = fakeStream(true);
    logEvent('engine', { message: 'engine: onnx (auto)' }, tty);
    logEvent('merge', { method: 'ties', seconds: 1.5 }, tty);
    expect(tty.text).toBe('\r\x1b[2Kengine: onnx (auto)\n\r\x1b[2Kmerge method=ties seconds=1.5\n');
    const pipe = fakeStream(false);
    logEvent('engine', { message: 'engine: onnx (auto)' }, pipe);
    expect(JSON.parse(pipe.text)).toMatchObject({ event: 'engine', message: 'engine: onnx (auto)' });
  });

  it('reportProgress: a meter per subscription, steps counted from the values, done on completion', async () => {
    const stream = fakeStream(false);
    const batches = from([3, 4, 5]).pipe(reportProgress({ label: 'tokenize', stream, now: () => 0, intervalMs: 0 }, (n) => n));
    expect(await lastValueFrom(batches)).toBe(5);
    expect(await lastValueFrom(batches)).toBe(5);
    const lines = stream.text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const counts = lines.map((l) => [l.event, l.examples]);
    expect(counts).toEqual([['progress', 3], ['progress', 7], ['progress', 12], ['done', 12], ['progress', 3], ['progress', 7], ['progress', 12], ['done', 12]]);
  });

  it('reportProgress: a throwing count is an error of the stream; an error ends a terminal meter line', async () => {
    const counting = fakeStream(true);
    const counted = from([1, 2]).pipe(reportProgress({ label: 'predict', stream: counting, now: () => 0, intervalMs: 0 }, (n) => {
      if (n === 2) throw new Error('bad batch');
      return n;
    }));
    await expect(lastValueFrom(counted)).rejects.toThrow('bad batch');
    expect(counting.text).toBe('\r\x1b[2Kpredict: 1 examples 0.0 examples/s 0.0s\n');
    const failing = fakeStream(true);
    const source = concat(from([1]), throwError(() => new Error('disk full'))).pipe(reportProgress({ label: 'merge', stream: failing, now: () => 0 }));
    await expect(lastValueFrom(source)).rejects.toThrow('disk full');
    expect(failing.text).toBe('\r\x1b[2Kmerge: 1 examples 0.0 examples/s 0.0s\n');
  });
});
