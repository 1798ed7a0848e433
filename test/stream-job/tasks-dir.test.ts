import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { glueTask } from '@fisher-merge/data';
import type { MaskFisher } from '@fisher-merge/fisher';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { mergeModels } from '@fisher-merge/merge-writer';
import { loadStreamConfig, loadTaskFile, outLayout, readLatest, readStreamState, runStreamJob, type JobStatus, type VersionManifest } from '@fisher-merge/stream-job';
import { eventually, type LogLine } from '../support.ts';
import { expectSameStats, modelDir, publishParquet, REPO, split, taskRows, tempDir } from './helpers.ts';

// A guard against a hang, not a speed requirement: these runs load models and merge versions on a loaded machine.
const HANG_GUARD_MS = 900_000;

/** The job's log lines in this process, and a wait for the first (after `from`) that matches. */
function captureLog() {
  const lines: LogLine[] = [];
  const waiters = new Set<() => void>();
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array) => {
    for (const l of String(chunk).split('\n').filter((l) => l.startsWith('{'))) lines.push(JSON.parse(l) as LogLine);
    for (const wake of [...waiters]) wake();
    return true;
  }) as typeof process.stderr.write);
  const events = (event: string, match: (l: LogLine) => boolean = () => true) => lines.filter((l) => l.event === event && match(l));
  const line = (event: string, match: (l: LogLine) => boolean = () => true, from = 0): Promise<LogLine> =>
    new Promise((resolve) => {
      const check = (): void => {
        const found = lines.slice(from).find((l) => l.event === event && match(l));
        if (found) {
          waiters.delete(check);
          resolve(found);
        }
      };
      waiters.add(check);
      check();
    });
  return { lines, events, line, restore: () => spy.mockRestore() };
}

/** A task file written the way a careful producer does: a hidden temp name, then rename. */
function writeTaskFile(file: string, entry: Record<string, unknown>): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  writeFileSync(tmp, stringify(entry));
  renameSync(tmp, file);
}

const taskEntry = (task: string, watch: string, model = modelDir(task)) => ({ task, model, watch, ready: 'stable', stable_ms: 0, poll_ms: 20 });

/** A job over a tasks_dir (no `tasks:`), files listed every 20 ms. */
function writeConfig(dir: string, extra: Record<string, unknown> = {}): string {
  const file = path.join(dir, 'config.yaml');
  writeFileSync(file, stringify({ out: 'out', engine: 'onnx', fisher: { mode: 'batch', batch_size: 8 }, source_batch_rows: 16, tasks_dir: 'tasks', tasks_dir_poll_ms: 20, ...extra }));
  mkdirSync(path.join(dir, 'tasks'), { recursive: true });
  return file;
}

/** Each task's first rows as Parquet files of the given sizes in DIR/incoming/TASK; returns the rows and the directories. */
async function incoming(dir: string, tasks: Record<string, number[]>) {
  const out: Record<string, { watch: string; rows: Awaited<ReturnType<typeof taskRows>>; parts: ReturnType<typeof split> }> = {};
  for (const [task, sizes] of Object.entries(tasks)) {
    const watch = path.join(dir, 'incoming', task);
    mkdirSync(watch, { recursive: true });
    const rows = await taskRows(task, sizes.reduce((a, b) => a + b, 0));
    out[task] = { watch, rows, parts: split(rows, sizes) };
  }
  return out;
}

/** The one-shot `fisher` of a task's rows (all in one file), with a model. */
async function oneShot(dir: string, task: string, rows: Awaited<ReturnType<typeof taskRows>>, model = modelDir(task)): Promise<MaskFisher> {
  const file = path.join(dir, `one-shot-${task}-${path.basename(model)}.parquet`);
  publishParquet(file, rows);
  return (await computeMaskFisher({ modelDir: model, data: file, task: glueTask(task), batchSize: 8, mode: 'batch', engine: 'onnx' })).stats;
}

const manifestOf = (out: string, version: number): VersionManifest => JSON.parse(readFileSync(path.join(out, 'versions', String(version), 'manifest.json'), 'utf8')) as VersionManifest;
const tensorsOf = (dir: string): Buffer => readFileSync(path.join(dir, 'model.safetensors'));

describe('stream job: tasks that join and leave (tasks_dir)', () => {
  it('a job that starts with one task and gains a second while running ends with the version `merge` makes of the same rows of both; a malformed task file is one line and the job goes on', async () => {
    const dir = tempDir();
    const data = await incoming(dir, { sst2: [24, 24], cola: [16, 16] });
    for (const { watch, parts } of Object.values(data)) parts.forEach((part, i) => publishParquet(path.join(watch, `part-${i}.parquet`), part));
    const config = await loadStreamConfig(writeConfig(dir, { publish: { every_examples: 24, on_stop: true } }));
    const tasksDir = path.join(dir, 'tasks');
    writeTaskFile(path.join(tasksDir, 'sst2.yaml'), taskEntry('sst2', data.sst2!.watch));
    const broken = path.join(tasksDir, 'broken.yaml');
    writeTaskFile(broken, { ...taskEntry('cola', data.cola!.watch), lamda: 2 });
    const log = captureLog();
    const drain = new AbortController();
    let result;
    try {
      const running = runStreamJob(config, { drain: drain.signal });
      await log.line('stream.file_done', (l) => l.task === 'sst2');
      // The first task has folded batches: the second joins the running job.
      writeTaskFile(path.join(tasksDir, 'cola.yaml'), taskEntry('cola', data.cola!.watch));
      for (const task of ['sst2', 'cola']) for (const part of ['part-0.parquet', 'part-1.parquet']) await log.line('stream.file_done', (l) => l.task === task && l.file === part);
      drain.abort();
      result = await running;
    } finally {
      log.restore();
    }
    expect(result.stoppedBy).toBe('drained');

    // The malformed file: one line naming it and its key, however many listings followed; the job went on.
    const refused = log.events('stream.task_file_refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]!.file).toBe(broken);
    expect(refused[0]!.error).toContain('lamda');

    // Version 1 was built before the second task joined; the last holds both, and equals `merge` of the one-shot Fisher of the same rows.
    expect(Object.keys(manifestOf(config.out, 1).tasks)).toEqual(['sst2']);
    const last = await readLatest(config.out);
    expect(last).toBe(result.lastVersion);
    const manifest = manifestOf(config.out, last!);
    expect(Object.keys(manifest.tasks)).toEqual(['sst2', 'cola']);
    expect([manifest.tasks.sst2!.examples, manifest.tasks.cola!.examples]).toEqual([48, 32]);
    const reference = [await oneShot(dir, 'sst2', data.sst2!.rows), await oneShot(dir, 'cola', data.cola!.rows)];
    expectSameStats(result.stats.sst2!, reference[0]!);
    expectSameStats(result.stats.cola!, reference[1]!);
    const merged = path.join(dir, 'merged');
    await mergeModels({ models: [modelDir('sst2'), modelDir('cola')], maskFishers: reference, method: 'mask-fisher', out: merged });
    const published = path.join(config.out, 'versions', String(last));
    for (const folder of ['encoder', 'sst2', 'cola']) expect(tensorsOf(path.join(published, folder)).equals(tensorsOf(path.join(merged, folder))), folder).toBe(true);
  }, HANG_GUARD_MS);

  it('a task file removed leaves (the next version is built without it), returns and resumes its statistics, and restarts them when its model changed', async () => {
    const dir = tempDir();
    const data = await incoming(dir, { sst2: [16], cola: [16, 16] });
    publishParquet(path.join(data.sst2!.watch, 'part-0.parquet'), data.sst2!.parts[0]!);
    publishParquet(path.join(data.cola!.watch, 'part-0.parquet'), data.cola!.parts[0]!);
    const config = await loadStreamConfig(writeConfig(dir, { publish: { on_stop: false } }));
    const colaFile = path.join(dir, 'tasks', 'cola.yaml');
    writeTaskFile(path.join(dir, 'tasks', 'sst2.yaml'), taskEntry('sst2', data.sst2!.watch));
    writeTaskFile(colaFile, taskEntry('cola', data.cola!.watch));
    const checkpoint = outLayout(config.out).checkpoint;
    const colaExamples = async () => (await readStreamState(checkpoint).catch(() => undefined))?.tasks.cola?.stats.examples;
    const log = captureLog();
    const drain = new AbortController();
    let result;
    try {
      const running = runStreamJob(config, { drain: drain.signal });
      // Once both tasks' every row is folded, an operator asks for a version (no policy publishes on its own).
      await eventually('both tasks folded', async () => {
        const state = await readStreamState(checkpoint).catch(() => undefined);
        return state?.tasks.sst2?.stats.examples === 16 && state.tasks.cola?.stats.examples === 16;
      });
      mkdirSync(path.dirname(outLayout(config.out).publishFile), { recursive: true });
      writeFileSync(outLayout(config.out).publishFile, '');
      const both = await log.line('stream.published');
      expect(both.examples).toEqual({ sst2: 16, cola: 16 });

      // Removed: it leaves, and a version without it follows.
      rmSync(colaFile);
      await log.line('stream.task_left', (l) => l.task === 'cola');
      const without = await log.line('stream.published', (l) => (l.version as number) > (both.version as number));
      expect(without.reason).toBe('tasks_changed');
      expect(Object.keys(manifestOf(config.out, without.version as number).tasks)).toEqual(['sst2']);
      expect(await colaExamples()).toBe(16);
      await eventually('status.json shows cola absent, its examples kept', () => {
        const status = JSON.parse(readFileSync(outLayout(config.out).status, 'utf8')) as JobStatus;
        return status.tasks.cola?.present === false && status.tasks.cola.examples === 16 && status.tasks.sst2?.present === true;
      });

      // Rows that arrive while it is away wait; back, it resumes from its 16 examples and reads only them.
      publishParquet(path.join(data.cola!.watch, 'part-1.parquet'), data.cola!.parts[1]!);
      const mark = log.lines.length;
      writeTaskFile(colaFile, taskEntry('cola', data.cola!.watch));
      const back = await log.line('stream.task_joined', (l) => l.task === 'cola', mark);
      expect(back.examples).toBe(16);
      await log.line('stream.file_done', (l) => l.task === 'cola' && l.file === 'part-1.parquet', mark);
      await eventually('cola resumed to 32 examples', async () => (await colaExamples()) === 32);
      expectSameStats((await readStreamState(checkpoint))!.tasks.cola!.stats, await oneShot(dir, 'cola', data.cola!.rows));

      // Its model changed: its statistics start again, over its whole source, with the new model.
      const again = log.lines.length;
      writeTaskFile(colaFile, taskEntry('cola', data.cola!.watch, modelDir('rte')));
      const restarted = await log.line('stream.task_restarted', (l) => l.task === 'cola', again);
      expect(restarted.examples_dropped).toBe(32);
      expect((await log.line('stream.task_joined', (l) => l.task === 'cola', again)).examples).toBe(0);
      await log.line('stream.file_done', (l) => l.task === 'cola' && l.file === 'part-1.parquet', again);
      drain.abort();
      result = await running;
    } finally {
      log.restore();
    }
    // No restart before the model changed.
    expect(log.events('stream.task_restarted')).toHaveLength(1);
    expectSameStats(result.stats.cola!, await oneShot(dir, 'cola', data.cola!.rows, modelDir('rte')));
    expectSameStats(result.stats.sst2!, await oneShot(dir, 'sst2', data.sst2!.rows));
  }, HANG_GUARD_MS);

  it('under a gate a task file needs validation rows, judged by the gate\'s metric; without a gate it may not name any', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'sst2.yaml');
    writeTaskFile(file, taskEntry('sst2', 'incoming'));
    await expect(loadTaskFile(file, { metric: undefined })).rejects.toThrow(`${file}: validation: expected a validation Parquet file (the config's gate scores every candidate version on it), got nothing`);
    writeTaskFile(file, { ...taskEntry('sst2', 'incoming'), validation: 'rows.parquet' });
    await expect(loadTaskFile(file, undefined)).rejects.toThrow(`${file}: validation: is read by a 'gate' only`);
    await expect(loadTaskFile(file, { metric: { sst2: 'spearmanr' } })).rejects.toThrow('expected one of accuracy');
    const task = await loadTaskFile(file, { metric: undefined });
    expect([task.validation, task.input]).toEqual([{ file: path.join(dir, 'rows.parquet'), metric: 'accuracy' }, expect.objectContaining({ dir: path.join(dir, 'incoming') })]);
  });

  it('kill -9 while a task that joined is mid-file, then restarted: each task holds exactly its rows, once', async () => {
    const dir = tempDir();
    // 36 rows, then 28 that arrive after the kill: each task stops mid-file at row 32 (4 rows wait for a full batch) until then.
    const data = await incoming(dir, { sst2: [36, 28], cola: [36, 28] });
    const arrive = (part: number) => Object.values(data).forEach(({ watch, parts }) => publishParquet(path.join(watch, `part-${part}.parquet`), parts[part]!));
    arrive(0);
    const config = writeConfig(dir, { publish: { every_examples: 40, on_stop: true } });
    writeTaskFile(path.join(dir, 'tasks', 'sst2.yaml'), taskEntry('sst2', data.sst2!.watch));
    const checkpoint = outLayout(path.join(dir, 'out')).checkpoint;
    const midFile = (task: string) => eventually(`${task} mid-file in the checkpoint`, async () => ((await readStreamState(checkpoint).catch(() => undefined))?.tasks[task]?.cursor.current?.row ?? 0) > 0, Infinity);

    const first = startJob(config);
    first.stderr!.resume();
    await midFile('sst2');
    writeTaskFile(path.join(dir, 'tasks', 'cola.yaml'), taskEntry('cola', data.cola!.watch));
    await midFile('cola');
    first.kill('SIGKILL');
    await once(first, 'exit');
    const left = (await readStreamState(checkpoint))!;
    expect(left.tasks.cola!.cursor.current?.file).toBe('part-0.parquet');

    arrive(1);
    const last = startJob(config, ['--exit-when-idle', '500']);
    let stderr = '';
    last.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    expect((await once(last, 'exit'))[0], stderr).toBe(0);
    // The restarted job resumed the joined task from the checkpoint the kill left.
    const joined = stderr.split('\n').filter((l) => l.includes('"stream.task_joined"')).map((l) => JSON.parse(l) as LogLine);
    expect(joined.find((l) => l.task === 'cola')?.resume).toEqual(left.tasks.cola!.cursor.current);
    const state = (await readStreamState(checkpoint))!;
    for (const task of ['sst2', 'cola']) expectSameStats(state.tasks[task]!.stats, await oneShot(dir, task, data[task]!.rows));
    expect(Object.keys(manifestOf(path.join(dir, 'out'), (await readLatest(path.join(dir, 'out')))!).tasks).sort()).toEqual(['cola', 'sst2']);
  }, HANG_GUARD_MS);
});

function startJob(config: string, args: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [path.join(REPO, 'bin/fisher-merge.mjs'), 'stream', config, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  process.once('exit', () => child.kill('SIGKILL'));
  return child;
}
