import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import type { Activation } from '@fisher-merge/model';

/** mulberry32: a small seeded PRNG, uniform in [0, 1), so random test data is reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const tempDirs: string[] = [];

/**
 * A fresh temporary directory (usable inside tests and helpers), removed after its test file by
 * test/remove-temp-dirs.ts: vitest's forks end without an 'exit' event, so an exit hook leaked them.
 */
export function tempDir(prefix = 'fisher-merge-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** Removes every directory tempDir made in this test file. */
export function removeTempDirs(): void {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** erf to ~1e-15 (series for small |x|, continued fraction otherwise). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let sum = x, term = x;
    for (let n = 1; n < 80; n++) {
      term *= (-x * x) / n;
      sum += term / (2 * n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz).
  let f = ax, C = ax, Dd = 0;
  for (let n = 1; n < 200; n++) {
    const a = n / 2;
    Dd = 1 / (ax + a * Dd);
    C = ax + a / C;
    const delta = C * Dd;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** Float64 activations as Hugging Face defines them (gelu: exact erf form; gelu_new: tanh approximation). */
export function activation(x: number, a: Activation): number {
  switch (a) {
    case 'gelu':
      return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_new':
      return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    case 'relu':
      return Math.max(0, x);
    case 'tanh':
      return Math.tanh(x);
    case 'none':
      return x;
  }
}

/**
 * A virtual clock for code that takes a `Clock` (libs/data): time moves only when the test calls
 * `advance`, and `sleeping()` resolves once the code under test waits on it, so a test steps
 * through polls by awaited events instead of sleeping.
 */
export class VirtualClock {
  time = 0;
  private sleepers: { until: number; wake: () => void }[] = [];
  private watchers: (() => void)[] = [];

  now = (): number => this.time;

  sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
    new Promise((resolve) => {
      const sleeper = { until: this.time + ms, wake: resolve };
      this.sleepers.push(sleeper);
      signal?.addEventListener('abort', () => {
        this.sleepers = this.sleepers.filter((s) => s !== sleeper);
        resolve();
      }, { once: true });
      for (const w of this.watchers.splice(0)) w();
    });

  /** Resolves once something waits on the clock (at once if something already does). */
  sleeping(): Promise<void> {
    return this.sleepers.length > 0 ? Promise.resolve() : new Promise((resolve) => this.watchers.push(resolve));
  }

  /** Moves time forward and wakes every sleeper now due. */
  advance(ms: number): void {
    this.time += ms;
    const due = this.sleepers.filter((s) => s.until <= this.time);
    this.sleepers = this.sleepers.filter((s) => s.until > this.time);
    for (const s of due) s.wake();
  }
}

/** One line of a command's stderr off a terminal. */
export interface LogLine {
  time: string;
  event: string;
  message?: string;
  [field: string]: unknown;
}

/** A command's stderr off a terminal, which is JSON lines only; throws at the first line that is not. */
export function logLines(stderr: string): LogLine[] {
  return stderr.split('\n').filter((l) => l !== '').map((line) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      throw new Error(`stderr line is not JSON: ${line}`);
    }
    const record = parsed as LogLine;
    if (typeof record?.event !== 'string' || typeof record.time !== 'string') throw new Error(`stderr line has no time and event: ${line}`);
    return record;
  });
}

/** The message of the one error line of a failed command's stderr (off a terminal). */
export function errorLine(stderr: string): string {
  const errors = logLines(stderr).filter((l) => l.event === 'error');
  if (errors.length !== 1 || typeof errors[0]!.message !== 'string') throw new Error(`expected exactly one error line, got:\n${stderr}`);
  return errors[0]!.message;
}

/** Retries `check` up to `attempts` times, `everyMs` apart, until it is true: waits for an event, however fast or slow the machine. */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, attempts = 3000, everyMs = 20): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (await check()) return;
    await pause(everyMs);
  }
  throw new Error(`${what}: not seen after ${attempts} checks`);
}

/** max |a - b| / max |b|: the error relative to the largest entry of the expected values. */
export function largestRelative(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  return diff / scale;
}

/** Sizes of every file being written (a `.tmp-` name) under `dir`, by path (none while a folder is being renamed). */
export function partialFiles(dir: string): [string, number][] {
  let files: string[];
  try {
    files = readdirSync(dir, { recursive: true, encoding: 'utf8' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return files
    .filter((f) => path.basename(f).includes('.safetensors.tmp-'))
    .flatMap((f) => {
      const size = statSync(path.join(dir, f), { throwIfNoEntry: false })?.size;
      return size === undefined ? [] : [[f, size] as [string, number]];
    });
}
