// Versions gated on evaluation: a candidate becomes `latest` only if every task's validation figure passes.
import { spawn } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { evaluateModel } from '@fisher-merge/eval/evaluate';
import { loadStreamConfig, outLayout, runStreamJob, VersionGate, type JobStatus, type Rejection, type VersionManifest } from '@fisher-merge/stream-job';
import { cli, expectRefused, glueFile } from '../reliability/support.ts';
import { logLines, type LogLine } from '../support.ts';
import { modelDir, publishParquet, REPO, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

const TASKS = ['sst2', 'stsb'] as const;
type Task = (typeof TASKS)[number];
// The golden merges' mask-Fisher rows: the first 128 training rows of each task, batches of 32.
const ROWS = 128;
const RESULTS = JSON.parse(readFileSync(path.join(REPO, 'test/fixtures/results.json'), 'utf8')) as {
  individual: Record<Task, Record<string, number>>;
  pairs: Record<string, { fisher_nodes: { metrics: Record<Task, Record<string, number>> } }>;
};
// float32 in onnxruntime and in PyTorch may put an example or two on the other side of a decision.
const ACCURACY_SLACK = 2 / 872;

const readJson = <T>(file: string): T => JSON.parse(readFileSync(file, 'utf8')) as T;

/**
 * An sst2+stsb mask-fisher stream job; each `run` adds the next 128 training rows of each task, then
 * runs the CLI with `gate` (and per-task lambdas) until it has drained them and published at the stop.
 */
async function gatedJob(runs: number) {
  const dir = tempDir();
  const rows = await Promise.all(TASKS.map((t) => taskRows(t, runs * ROWS)));
  const watch = TASKS.map((t) => path.join(dir, t));
  for (const w of watch) mkdirSync(w);
  const layout = outLayout(path.join(dir, 'out'));
  let part = 0;
  return {
    layout,
    run(gate: Record<string, unknown>, lambdas: Partial<Record<Task, number>> = {}): LogLine[] {
      TASKS.forEach((_, j) => publishParquet(path.join(watch[j]!, `part-${part}.parquet`), rows[j]!.slice(part * ROWS, (part + 1) * ROWS)));
      part++;
      const file = writeStreamConfig(path.join(dir, 'stream.yaml'), layout.out, TASKS.map((task, j) => ({ task, watch: watch[j]!, validation: glueFile(task), ...(lambdas[task] !== undefined ? { lambda: lambdas[task] } : {}) })), {
        fisher: { mode: 'batch', batch_size: 32 },
        gate,
      });
      const run = cli(['stream', file, '--exit-when-idle', '300']);
      expect(run.status, run.stderr).toBe(0);
      return logLines(run.stderr);
    },
    manifest: (version: number) => readJson<VersionManifest>(path.join(layout.versions, String(version), 'manifest.json')),
    rejection: (version: number) => readJson<Rejection>(path.join(layout.rejected, String(version), 'rejection.json')),
    latest: () => readFileSync(layout.latest, 'utf8').trim(),
    status: () => readJson<JobStatus>(layout.status),
  };
}

const events = (lines: LogLine[], event: string) => lines.filter((l) => l.event === event);

describe('stream job: versions gated on evaluation', () => {
  it('sst2+stsb (sst2 0.789 -> 0.499) is accepted at min_relative_to_own 0.6 and rejected at 0.9: kept under rejected/N, latest unchanged', async () => {
    const job = await gatedJob(2);
    const first = job.run({ min_relative_to_own: 0.6 });
    expect(events(first, 'stream.published').map((l) => l.version)).toEqual([1]);
    expect(job.latest()).toBe('1');
    const { evaluation } = job.manifest(1);
    expect(evaluation!.min_relative_to_own).toBe(0.6);
    expect(evaluation!.previous_version).toBeNull();
    const sst2 = evaluation!.tasks.sst2!;
    expect(sst2).toMatchObject({ metric: 'accuracy', examples: 872, validation: glueFile('sst2'), previous: null });
    // The figures the independent PyTorch reference gives for this merge and for sst2's own model.
    expect(Math.abs(sst2.value! - RESULTS.pairs.sst2_stsb!.fisher_nodes.metrics.sst2.accuracy!)).toBeLessThanOrEqual(ACCURACY_SLACK);
    expect(Math.abs(sst2.own! - RESULTS.individual.sst2.accuracy!)).toBeLessThanOrEqual(ACCURACY_SLACK);
    expect(sst2.value!).toBeLessThan(0.9 * sst2.own!);
    expect(evaluation!.tasks.stsb!.metric).toBe('spearmanr');
    expect(evaluation!.tasks.stsb!.own).toBeCloseTo(RESULTS.individual.stsb.spearmanr!, 3);
    // Each task's model card shows the version's figures on its validation rows.
    const folder = job.manifest(1).tasks.sst2!.folder;
    expect(readFileSync(path.join(job.layout.versions, '1', folder, 'README.md'), 'utf8')).toContain(`| sst2 | accuracy | ${sst2.value!.toFixed(4)} | 872 |`);

    // A restarted job with 128 more rows per task and a stricter gate: the candidate is refused.
    const second = job.run({ min_relative_to_own: 0.9 });
    expect(events(second, 'stream.published')).toEqual([]);
    const [rejected] = events(second, 'stream.version_rejected');
    expect(rejected).toMatchObject({ version: 2, latest: 1 });
    const rejection = job.rejection(2);
    expect(rejected!.failures).toEqual(rejection.failures);
    expect(rejection).toMatchObject({ version: 2, latest: 1, reason: 'stop' });
    const [failure] = rejection.failures;
    expect(failure).toMatchObject({ task: 'sst2', metric: 'accuracy', bound: 'min_relative_to_own', own: sst2.own, previous: sst2.value });
    expect(failure!.required).toBeCloseTo(0.9 * sst2.own!, 12);
    expect(failure!.value!).toBeLessThan(failure!.required);
    expect(rejection.evaluation.tasks.sst2!.value).toBe(failure!.value);
    // The candidate is complete under rejected/2; versions/ and latest still show version 1 only.
    expect(readdirSync(path.join(job.layout.rejected, '2')).sort()).toEqual(['encoder', 'manifest.json', 'merge.json', 'rejection.json', 'report.html', 'sst2', 'stsb']);
    expect(readdirSync(job.layout.versions)).toEqual(['1']);
    expect(job.latest()).toBe('1');
    expect(job.status()).toMatchObject({ last_version: 1, last_rejected: 2 });
    expect(cli(['status', job.layout.out]).stdout).toContain('last rejected candidate: 2');
  });

  it('max_drop compares with the last accepted version (read from its manifest after a restart); gate.metric picks a task metric', async () => {
    const job = await gatedJob(3);
    // stsb weighted almost to nothing: the merge keeps sst2's figure. No bound: scored, and accepted.
    job.run({ metric: { stsb: 'pearson' } }, { stsb: 1e-6 });
    const kept = job.manifest(1).evaluation!;
    expect(kept.tasks.stsb!.metric).toBe('pearson');
    expect(kept.tasks.stsb!.own).toBeCloseTo(RESULTS.individual.stsb.pearson!, 3);
    expect(kept.tasks.sst2!.value!).toBeGreaterThan(0.9 * kept.tasks.sst2!.own!);

    // stsb at full weight takes sst2 down by more than 0.1 from version 1.
    const second = job.run({ max_drop: 0.1, metric: { stsb: 'pearson' } });
    expect(events(second, 'stream.version_rejected').map((l) => l.version)).toEqual([2]);
    const failures = job.rejection(2).failures;
    expect(failures.map((f) => [f.task, f.metric, f.bound])).toContainEqual(['sst2', 'accuracy', 'max_drop']);
    const sst2 = failures.find((f) => f.task === 'sst2')!;
    expect(sst2.previous).toBe(kept.tasks.sst2!.value);
    expect(sst2.required).toBeCloseTo(kept.tasks.sst2!.value! - 0.1, 12);
    expect(job.latest()).toBe('1');

    // A looser drop accepts the next candidate; numbers go on after the rejected one. stsb is judged
    // by Spearman now: version 1 has no Spearman figure, so no drop applies to it.
    const third = job.run({ max_drop: 0.5 });
    expect(events(third, 'stream.published').map((l) => l.version)).toEqual([3]);
    expect(job.latest()).toBe('3');
    expect(readdirSync(job.layout.versions).sort()).toEqual(['1', '3']);
    expect(job.manifest(3).evaluation).toMatchObject({ max_drop: 0.5, previous_version: 1, tasks: { sst2: { previous: kept.tasks.sst2!.value }, stsb: { metric: 'spearmanr', previous: null } } });
    expect(job.status()).toMatchObject({ last_version: 3, last_rejected: 2 });
  });
});

describe('stream job: scoring a candidate off the loop', () => {
  it('folds a file that arrives while a candidate is scored, before the verdict', async () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    const rows = await taskRows('sst2', 16);
    publishParquet(path.join(watch, 'part-0.parquet'), rows.slice(0, 8));
    const validation = path.join(dir, 'validation.parquet');
    publishParquet(validation, await taskRows('sst2', 5000), 1024);
    const config = await loadStreamConfig(writeStreamConfig(path.join(dir, 'stream.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch, validation }], {
      gate: { min_relative_to_own: 0.5 },
      publish: { every_examples: 8, on_stop: false },
    }));
    const logged: LogLine[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array) => {
      logged.push(...String(chunk).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine));
      return true;
    }) as typeof process.stderr.write);
    const drain = new AbortController();
    let settled = false;
    const running = runStreamJob(config, { drain: drain.signal }).finally(() => (settled = true));
    const seen = (event: string, file?: string) => logged.some((l) => l.event === event && (file === undefined || l.file === file));
    // The second file is written once the first candidate is being scored; the input ends once it is folded.
    while (!settled) {
      if (seen('stream.version_evaluating') && !existsSync(path.join(watch, 'part-1.parquet'))) publishParquet(path.join(watch, 'part-1.parquet'), rows.slice(8));
      if (seen('stream.file_done', 'part-1.parquet')) drain.abort();
      await turn();
    }
    const result = await running.finally(() => spy.mockRestore());
    expect(result.stats.sst2!.examples).toBe(16);
    const order = logged.map((l) => (l.event === 'stream.file_done' ? `${l.event} ${l.file as string}` : l.event));
    const scoring = order.indexOf('stream.version_evaluating');
    const verdict = order.findIndex((e) => e === 'stream.published' || e === 'stream.version_rejected');
    expect(scoring).toBeGreaterThanOrEqual(0);
    expect(order.slice(scoring, verdict)).toContain('stream.file_done part-1.parquet');
  });
});

describe('stream job: a gate after kill -9', () => {
  it('a job killed while it scores a candidate leaves nothing under versions/ or rejected/; the restart cleans up and publishes', async () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    publishParquet(path.join(watch, 'part-0.parquet'), await taskRows('sst2', 32));
    // Many validation rows, so that scoring a candidate outlasts the moment between its log line and the kill.
    const validation = path.join(dir, 'validation.parquet');
    publishParquet(validation, await taskRows('sst2', 10_000), 1024);
    const layout = outLayout(path.join(dir, 'out'));
    const file = writeStreamConfig(path.join(dir, 'stream.yaml'), layout.out, [{ task: 'sst2', watch, validation }], { gate: { min_relative_to_own: 0.5 } });
    const child = spawn(process.execPath, [path.join(REPO, 'bin/fisher-merge.mjs'), 'stream', file, '--exit-when-idle', '300'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await new Promise<void>((resolve) => {
      let seen = '';
      child.stderr!.on('data', (d: Buffer) => {
        seen += d.toString();
        if (seen.includes('"stream.version_evaluating"')) resolve();
      });
    });
    child.kill('SIGKILL');
    await exited;
    // Killed mid-candidate: only its hidden staging folder exists.
    expect(readdirSync(layout.versions)).toEqual(['.staging-1']);
    expect(existsSync(layout.rejected)).toBe(false);
    expect(existsSync(layout.latest)).toBe(false);

    publishParquet(path.join(watch, 'part-1.parquet'), (await taskRows('sst2', 64)).slice(32));
    const restart = cli(['stream', file, '--exit-when-idle', '300']);
    expect(restart.status, restart.stderr).toBe(0);
    expect(events(logLines(restart.stderr), 'stream.published').map((l) => l.version)).toEqual([1]);
    expect(readdirSync(layout.versions)).toEqual(['1']);
    expect(readFileSync(layout.latest, 'utf8').trim()).toBe('1');
    expect(readJson<VersionManifest>(path.join(layout.versions, '1', 'manifest.json')).evaluation!.tasks.sst2!.examples).toBe(10_000);
  });
});

describe('stream job: a gate with bad input is one line naming the key or file, before the job starts', () => {
  async function refused(edit: { gate?: unknown; validation?: Partial<Record<Task, string | undefined>> }, pattern: RegExp): Promise<void> {
    const dir = tempDir();
    const out = path.join(dir, 'out');
    const watch = TASKS.map((t) => path.join(dir, t));
    for (const w of watch) mkdirSync(w);
    const validation = { sst2: glueFile('sst2'), stsb: glueFile('stsb'), ...edit.validation };
    const file = writeStreamConfig(path.join(dir, 'stream.yaml'), out, TASKS.map((task, j) => ({ task, watch: watch[j]!, ...(validation[task] !== undefined ? { validation: validation[task] } : {}) })), {
      ...(edit.gate !== undefined ? { gate: edit.gate } : {}),
    });
    expectRefused(cli(['stream', file, '--exit-when-idle', '300']), pattern);
    // Nothing ran: no status, no version.
    expect(existsSync(outLayout(out).status)).toBe(false);
    expect(existsSync(outLayout(out).latest)).toBe(false);
  }

  it.each([
    ['a task without validation rows', { gate: {}, validation: { stsb: undefined } }, /stream\.yaml: tasks\[1\]\.validation: expected a validation Parquet file \(the gate scores every candidate version on it\), got nothing$/],
    ['validation rows without a gate', {}, /stream\.yaml: tasks\[0\]\.validation: is read by a 'gate' only/],
    ['min_relative_to_own 0', { gate: { min_relative_to_own: 0 } }, /stream\.yaml: gate\.min_relative_to_own: expected a number > 0, got 0$/],
    ['min_relative_to_own not a number', { gate: { min_relative_to_own: 'most' } }, /stream\.yaml: gate\.min_relative_to_own: expected a number > 0, got "most"$/],
    ['min_relative_to_own infinite (YAML .inf)', { gate: { min_relative_to_own: Infinity } }, /stream\.yaml: gate\.min_relative_to_own: expected a number > 0, got Infinity$/],
    ['a negative max_drop', { gate: { max_drop: -0.1 } }, /stream\.yaml: gate\.max_drop: expected a number >= 0, got -0\.1$/],
    ['a metric a task does not report', { gate: { metric: 'accuracy' } }, /stream\.yaml: gate\.metric: expected one of pearson, spearmanr \(the metrics of task stsb\), got "accuracy"$/],
    ['a metric of an unknown task', { gate: { metric: { qnli: 'accuracy' } } }, /stream\.yaml: gate\.metric\.qnli: expected a task name \(one of sst2, stsb\), got "qnli"$/],
    ['an unknown key', { gate: { min_relative: 0.9 } }, /stream\.yaml: gate\.min_relative: unknown key \(known: min_relative_to_own, max_drop, metric\)$/],
  ])('%s', async (_, edit, pattern) => refused(edit, pattern));

  it('a validation file that does not exist, or lacks the task\'s columns', async () => {
    await refused({ gate: { min_relative_to_own: 0.9 }, validation: { stsb: path.join(REPO, 'data/glue/stsb/nope.parquet') } }, /file not found: .*data\/glue\/stsb\/nope\.parquet/);
    await refused({ gate: { min_relative_to_own: 0.9 }, validation: { sst2: glueFile('stsb') } }, /stsb\/validation-00000-of-00001\.parquet: column 'sentence' not found/);
  });

  it("scores a task's own model again when other weights replace it at the same path, and keeps the score while they do not", async () => {
    const model = path.join(tempDir(), 'sst2');
    cpSync(modelDir('sst2'), model, { recursive: true });
    const gate = new VersionGate({ minRelativeToOwn: 0.5 }, 'onnx', 128, 1);
    const task = { name: 'sst2', spec: glueTask('sst2'), model, validation: { file: glueFile('sst2'), metric: 'accuracy' as const } };
    const [first] = await gate.scoreOwnModels([task]);
    expect((await gate.scoreOwnModels([task]))[0]).toBe(first);
    // cola's weights (the same shapes) in sst2's folder: another model at the same path.
    copyFileSync(path.join(modelDir('cola'), 'model.safetensors'), path.join(model, 'model.safetensors'));
    const [second] = await gate.scoreOwnModels([task]);
    const replaced = await evaluateModel({ modelDir: model, data: glueFile('sst2'), task: glueTask('sst2'), engine: 'onnx', maxLength: 128, threads: 1 });
    expect(second!.metrics).toEqual(replaced.metrics);
    expect(second!.metrics.accuracy).not.toBe(first!.metrics.accuracy);
  });
});
