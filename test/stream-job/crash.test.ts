import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Table } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { computeGrams, computeMaskFisher } from '@fisher-merge/merge-job';
import { loadEncoder } from '@fisher-merge/model';
import { isGramStats, outLayout, readStreamState } from '@fisher-merge/stream-job';
import { eventually } from '../support.ts';
import { maskFisherOf, modelDir, publishParquet, REPO, split, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

// A guard against a hang, not a speed requirement: these runs start many processes on a loaded machine.
const HANG_GUARD_MS = 900_000;

const TASKS = ['sst2', 'cola'] as const;
const FILES = 8;
const ROWS_PER_FILE = 64;
const CLI = path.join(REPO, 'bin/fisher-merge.mjs');

function startJob(config: string, args: string[] = []): ChildProcess {
  return spawn(process.execPath, [CLI, 'stream', config, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

interface Started {
  tasks: { task: string; examples: number; files_consumed: number; resume: { file: string; row: number } | null }[];
}

/** Resolves with the job's `stream.started` line once it logged it (models loaded, checkpoint read). */
function started(child: ChildProcess): Promise<Started> {
  return new Promise((resolve) => {
    let seen = '';
    child.stderr!.on('data', (d: Buffer) => {
      seen += d.toString();
      const line = seen.split('\n').slice(0, -1).find((l) => l.includes('"stream.started"'));
      if (line) resolve(JSON.parse(line) as Started);
    });
  });
}

/** Where a job resumes, per task, from the checkpoint it reads (nothing before the first one). */
const resumeFrom = (state: Checkpoint): Started['tasks'] => TASKS.map((task) => {
  const t = state?.tasks[task];
  return { task, examples: t?.stats.examples ?? 0, files_consumed: t?.cursor.consumed.size ?? 0, resume: t?.cursor.current ?? null };
});

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** Deterministic "random" extra delays before a kill. */
function delays(seed: number, n: number, min: number, max: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return min + (s / 2 ** 32) * (max - min);
  });
}

type Checkpoint = Awaited<ReturnType<typeof readStreamState>>;
const examplesIn = (state: Checkpoint) => Object.values(state?.tasks ?? {}).reduce((n, t) => n + t.stats.examples, 0);
const midFile = (state: Checkpoint) => Object.values(state?.tasks ?? {}).some((t) => (t.cursor.current?.row ?? 0) > 0);

/**
 * Polls the job's checkpoint until it shows new progress with a file half consumed, so the kill that
 * follows lands while work is under way however fast or loaded the machine is. When the job has
 * counted everything published, `more()` makes the next files arrive. Returns what it saw.
 */
async function progressMidFile(file: string, after: number, child: ChildProcess, more: (counted: number) => void): Promise<void> {
  await eventually(`mid-file progress past ${after} examples`, async () => {
    if (child.exitCode !== null) throw new Error(`the job exited (${child.exitCode}) before mid-file progress past ${after} examples`);
    const seen = await readStreamState(file).catch(() => undefined);
    if (seen !== undefined && examplesIn(seen) > after && midFile(seen)) return true;
    more(examplesIn(seen));
    return false;
  }, 30_000, 2);
}

/**
 * A job over FILES files per task, SIGKILLed three times at random points while the files arrive
 * and restarted each time, then drained: each run must resume from exactly the checkpoint the kill
 * before it left. Returns the final checkpoint and each task's rows (in order).
 */
async function killedAndResumed(dir: string, extra: Record<string, unknown> = {}) {
  const watch = (task: string) => path.join(dir, 'incoming', task);
  for (const task of TASKS) mkdirSync(watch(task), { recursive: true });
  const config = writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), TASKS.map((task) => ({ task, watch: watch(task), ready: 'marker' as const })), {
    publish: { every_examples: 200, on_stop: true },
    ...extra,
  });
  const rows = await Promise.all(TASKS.map((task) => taskRows(task, FILES * ROWS_PER_FILE)));
  const parts = rows.map((table) => split(table, Array.from({ length: FILES }, () => ROWS_PER_FILE)));
  let written = 0;
  const publishNext = (): void => {
    TASKS.forEach((task, t) => {
      const file = path.join(watch(task), `part-${String(written).padStart(3, '0')}.parquet`);
      publishParquet(file, parts[t]![written]!);
      writeFileSync(`${file}.done`, '');
    });
    written++;
  };
  // Files arrive while the job runs: a pair whenever it has counted all published rows.
  const more = (counted: number): void => {
    if (counted === written * ROWS_PER_FILE * TASKS.length && written < FILES) publishNext();
  };
  publishNext();

  // Each kill follows a checkpoint showing new progress inside a file, plus a seeded random delay.
  const checkpoint = outLayout(path.join(dir, 'out')).checkpoint;
  const atKill: number[] = [];
  // Each run must resume from exactly the checkpoint the kill before it left (mid-file or not).
  let left: Checkpoint;
  for (const delay of delays(7, 3, 0, 40)) {
    const child = startJob(config);
    expect((await started(child)).tasks).toEqual(resumeFrom(left));
    await progressMidFile(checkpoint, atKill.at(-1) ?? 0, child, more);
    await sleep(delay);
    child.kill('SIGKILL');
    await exited(child);
    left = await readStreamState(checkpoint);
    atKill.push(examplesIn(left));
  }
  while (written < FILES) publishNext();
  const last = startJob(config, ['--exit-when-idle', '1000']);
  expect((await started(last)).tasks).toEqual(resumeFrom(left));
  let stderr = '';
  last.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  expect(await exited(last), stderr).toBe(0);
  expect(atKill.every((n) => n > 0 && n < TASKS.length * FILES * ROWS_PER_FILE), `examples at the kills: ${atKill}`).toBe(true);

  const versionsDir = path.join(dir, 'out', 'versions');
  const versions = readdirSync(versionsDir);
  expect(versions.filter((v) => v.startsWith('.'))).toEqual([]);
  expect(versions.length).toBeGreaterThan(1);
  for (const v of versions) {
    expect(existsSync(path.join(versionsDir, v, 'manifest.json'))).toBe(true);
    for (const folder of ['encoder', ...TASKS]) await loadEncoder(path.join(versionsDir, v, folder));
  }
  return { state: (await readStreamState(checkpoint))!, rows };
}

/** Each task's rows as one Parquet file, for the one uninterrupted pass over them in the same order. */
function oneShotFiles(dir: string, rows: readonly Table[]): string[] {
  const oneShotDir = path.join(dir, 'one-shot');
  mkdirSync(oneShotDir);
  return TASKS.map((task, t) => {
    const file = path.join(oneShotDir, `${task}.parquet`);
    publishParquet(file, rows[t]!);
    return file;
  });
}

describe('stream job crash safety', () => {
  it('SIGKILLed at random points while files arrive, then restarted: no example lost or counted twice, every version complete', async () => {
    const dir = tempDir();
    const { state, rows } = await killedAndResumed(dir);
    const files = oneShotFiles(dir, rows);
    for (const [t, task] of TASKS.entries()) {
      // The same rows, in the same batches.
      const reference = (await computeMaskFisher({ modelDir: modelDir(task), data: files[t]!, task: glueTask(task), batchSize: 8, mode: 'batch', engine: 'onnx' })).stats;
      const got = maskFisherOf(state.tasks[task]!.stats);
      expect(got.examples).toBe(FILES * ROWS_PER_FILE);
      expect(got.dataFingerprint).toBe(reference.dataFingerprint);
      expect(Array.from(got.head)).toEqual(Array.from(reference.head));
      expect(Array.from(got.neuron)).toEqual(Array.from(reference.neuron));
    }
  }, HANG_GUARD_MS);

  it('with regmean, the Gram sums (files beside checkpoint.json) are exactly-once too across SIGKILLs', async () => {
    const dir = tempDir();
    const { state, rows } = await killedAndResumed(dir, { merge_method: 'regmean', parameters: { alpha: 0.9 } });
    const files = oneShotFiles(dir, rows);
    for (const [t, task] of TASKS.entries()) {
      const reference = (await computeGrams({ modelDir: modelDir(task), data: files[t]!, task: glueTask(task), batchSize: 8, engine: 'onnx' })).stats;
      const got = state.tasks[task]!.stats;
      if (!isGramStats(got)) throw new Error('expected Gram sums');
      expect(got.examples).toBe(FILES * ROWS_PER_FILE);
      expect(got.dataFingerprint).toBe(reference.dataFingerprint);
      for (const { name } of reference.inputs) {
        expect(got.grams.get(name)!.count).toBe(reference.grams.get(name)!.count);
        const [ours, want] = [got, reference].map((g) => Buffer.from(g.grams.get(name)!.sum.buffer));
        expect(ours!.equals(want!), `${name} bit for bit`).toBe(true);
      }
    }
  }, HANG_GUARD_MS);
});
