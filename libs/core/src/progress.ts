/**
 * Progress of long work: a one-line meter with examples/s and ETA on a TTY, structured JSON lines
 * otherwise (one every `intervalMs`, plus one at the end).
 */
export interface ProgressOptions {
  label: string;
  total?: number;
  unit?: string;
  stream?: NodeJS.WriteStream;
  intervalMs?: number;
  /** Overrides TTY detection (tests). */
  tty?: boolean;
}

export class Progress {
  private done = 0;
  private readonly start = performance.now();
  private lastPrint = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly intervalMs: number;

  constructor(private readonly opts: ProgressOptions) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.intervalMs = opts.intervalMs ?? (this.tty ? 100 : 5000);
  }

  get count(): number {
    return this.done;
  }

  get elapsedSeconds(): number {
    return (performance.now() - this.start) / 1000;
  }

  add(n: number): void {
    this.done += n;
    const now = performance.now();
    if (now - this.lastPrint >= this.intervalMs) {
      this.lastPrint = now;
      this.print(false);
    }
  }

  finish(): void {
    this.print(true);
  }

  private print(final: boolean): void {
    const secs = this.elapsedSeconds;
    const rate = secs > 0 ? this.done / secs : 0;
    const unit = this.opts.unit ?? 'examples';
    const total = this.opts.total;
    const eta = total !== undefined && rate > 0 ? Math.max(0, (total - this.done) / rate) : undefined;
    if (this.tty) {
      const of = total !== undefined ? `/${total}` : '';
      const etaText = eta !== undefined && !final ? ` ETA ${formatSeconds(eta)}` : '';
      const line = `${this.opts.label}: ${this.done}${of} ${unit} ${rate.toFixed(1)} ${unit}/s ${formatSeconds(secs)}${etaText}`;
      this.stream.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
    } else {
      const record: Record<string, unknown> = {
        event: final ? 'done' : 'progress',
        label: this.opts.label,
        [unit]: this.done,
        per_second: Number(rate.toFixed(2)),
        elapsed_s: Number(secs.toFixed(3)),
      };
      if (total !== undefined) record.total = total;
      if (eta !== undefined && !final) record.eta_s = Number(eta.toFixed(1));
      this.stream.write(`${JSON.stringify(record)}\n`);
    }
  }
}

function formatSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - m * 60).toString().padStart(2, '0')}s`;
}

/** A structured log line on stderr (JSON when not a TTY, readable text on a TTY). */
export function logEvent(event: string, fields: Record<string, unknown> = {}, stream: NodeJS.WriteStream = process.stderr): void {
  if (stream.isTTY) {
    const rest = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
    stream.write(`${event}${rest ? ` ${rest}` : ''}\n`);
  } else {
    stream.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
  }
}
