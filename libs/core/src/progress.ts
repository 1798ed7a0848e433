import { defer, finalize, tap, type MonoTypeOperatorFunction } from 'rxjs';

/**
 * Progress of long work: a one-line meter with the rate and ETA on a TTY, JSON lines otherwise (the
 * first step, then one every `intervalMs`, and one at the end), so that a log collector reading
 * stderr off a terminal only ever sees JSON.
 */
export interface ProgressOptions {
  label: string;
  /** Steps expected, when known: gives the ETA. */
  total?: number;
  /** What a step is (`examples`, `tensors`, `merges`). */
  unit?: string;
  stream?: NodeJS.WriteStream;
  intervalMs?: number;
  /** Overrides TTY detection (tests). */
  tty?: boolean;
  /** Milliseconds clock (tests drive it; default `performance.now`). */
  now?: () => number;
}

export class Progress {
  private done = 0;
  private readonly now: () => number;
  private readonly start: number;
  private lastPrint: number | undefined;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly intervalMs: number;

  constructor(private readonly opts: ProgressOptions) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.intervalMs = opts.intervalMs ?? (this.tty ? 100 : 5000);
    this.now = opts.now ?? (() => performance.now());
    this.start = this.now();
  }

  get count(): number {
    return this.done;
  }

  get elapsedSeconds(): number {
    return (this.now() - this.start) / 1000;
  }

  add(n: number): void {
    this.done += n;
    const now = this.now();
    if (this.lastPrint === undefined || now - this.lastPrint >= this.intervalMs) {
      this.lastPrint = now;
      this.print('progress');
    }
  }

  finish(): void {
    this.print('done');
  }

  /** Ends a TTY meter's line, so that an error printed next starts on its own line. */
  abort(): void {
    if (this.tty && this.lastPrint !== undefined) this.stream.write('\n');
  }

  private print(event: 'progress' | 'done'): void {
    const secs = this.elapsedSeconds;
    const rate = secs > 0 ? this.done / secs : 0;
    const unit = this.opts.unit ?? 'examples';
    const total = this.opts.total;
    const eta = event === 'done' ? 0 : total !== undefined && rate > 0 ? Math.max(0, (total - this.done) / rate) : undefined;
    if (this.tty) {
      const of = total !== undefined ? `/${total}` : '';
      const etaText = eta !== undefined && event !== 'done' ? ` ETA ${formatSeconds(eta)}` : '';
      const line = `${this.opts.label}: ${this.done}${of} ${unit} ${rate.toFixed(1)} ${unit}/s ${formatSeconds(secs)}${etaText}`;
      this.stream.write(`\r\x1b[2K${line}${event === 'done' ? '\n' : ''}`);
    } else {
      this.stream.write(jsonLine(event, {
        label: this.opts.label,
        [unit]: this.done,
        ...(total !== undefined ? { total } : {}),
        per_second: Number(rate.toFixed(2)),
        ...(eta !== undefined ? { eta_s: Number(eta.toFixed(1)) } : {}),
        elapsed_s: Number(secs.toFixed(3)),
      }));
    }
  }
}

/**
 * Meters the values passing through: `count(value)` steps each (default 1), a `done` line when the
 * source completes; an error or unsubscription ends a terminal meter's line. One meter per
 * subscription, so a re-subscribed pipeline counts afresh.
 */
export function reportProgress<T>(options: ProgressOptions, count: (value: T) => number = () => 1): MonoTypeOperatorFunction<T> {
  return (source) => defer(() => {
    const meter = new Progress(options);
    let completed = false;
    return source.pipe(
      tap({
        next: (value) => meter.add(count(value)),
        complete: () => {
          completed = true;
          meter.finish();
        },
      }),
      finalize(() => {
        if (!completed) meter.abort();
      }),
    );
  });
}

function formatSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - m * 60).toString().padStart(2, '0')}s`;
}

/**
 * A log line on stderr: JSON off a TTY (`{"time", "event", ...fields}`); on a TTY the `message` field
 * when there is one (`engine: onnx (auto)`), else `event key=value ...`.
 */
export function logEvent(event: string, fields: Record<string, unknown> = {}, stream: NodeJS.WriteStream = process.stderr): void {
  if (stream.isTTY) {
    const rest = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
    // From the line's start, clearing it: a log line replaces a progress meter drawn there.
    stream.write(`\r\x1b[2K${typeof fields.message === 'string' ? fields.message : `${event}${rest ? ` ${rest}` : ''}`}\n`);
  } else {
    stream.write(jsonLine(event, fields));
  }
}

function jsonLine(event: string, fields: Record<string, unknown>): string {
  return `${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`;
}
