// RegMean in the stream job: Gram sums streamed exactly like mask Fisher sums, checkpointed as files beside checkpoint.json.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { glueTask } from '@fisher-merge/data';
import type { GramStats } from '@fisher-merge/fisher';
import { computeGrams } from '@fisher-merge/merge-job';
import { mergeModels } from '@fisher-merge/merge-writer';
import { fisherFingerprint, formatStreamStatus, isGramStats, loadStreamConfig, outLayout, readLatest, readStreamState, readStreamStatus, runStreamJob, type TaskStatistics } from '@fisher-merge/stream-job';
import { cli, expectRefused } from '../reliability/support.ts';
import { largestRelative } from '../support.ts';
import { modelDir, publishParquet, REPO, split, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

const TASKS = ['sst2', 'cola'] as const;
// The golden's rows: each task's first 128 training rows; parts that straddle batches of 8.
const ROWS = 128;
const PARTS = [13, 30, 7, 41, 37];
const GOLDEN = path.join(REPO, 'test/fixtures/golden/merged/sst2_cola/regmean_a0.9.safetensors');

/** `fisher --kind gram` of the task's first ROWS rows, in batches of `batchSize`. */
async function oneShot(dir: string, task: string, batchSize: number): Promise<GramStats> {
  const file = path.join(dir, `${task}-all.parquet`);
  publishParquet(file, await taskRows(task, ROWS));
  return (await computeGrams({ modelDir: modelDir(task), data: file, task: glueTask(task), batchSize, engine: 'onnx' })).stats;
}

function gramsOf(stats: TaskStatistics | undefined): GramStats {
  if (!stats || !isGramStats(stats)) throw new Error('expected Gram statistics');
  return stats;
}

const bytes = (a: Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function expectSameGrams(got: GramStats, want: GramStats): void {
  expect(got.examples).toBe(want.examples);
  expect(got.dataFingerprint).toBe(want.dataFingerprint);
  expect(got.inputs.map(({ name, dim }) => [name, dim])).toEqual(want.inputs.map(({ name, dim }) => [name, dim]));
  for (const { name } of want.inputs) {
    expect(got.grams.get(name)!.count, name).toBe(want.grams.get(name)!.count);
    expect(bytes(got.grams.get(name)!.sum).equals(bytes(want.grams.get(name)!.sum)), `${name} sums bit for bit`).toBe(true);
  }
}

/** A regmean (alpha 0.9) job over each task's rows, which wait in the watched folders as PARTS files. */
async function regmeanJob(dir: string, extra: Record<string, unknown> = {}) {
  const watch = (task: string) => path.join(dir, 'incoming', task);
  for (const task of TASKS) {
    mkdirSync(watch(task), { recursive: true });
    const parts = split(await taskRows(task, ROWS), PARTS);
    parts.forEach((part, i) => publishParquet(path.join(watch(task), `part-${i}.parquet`), part));
  }
  const file = writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), TASKS.map((task) => ({ task, watch: watch(task) })), { merge_method: 'regmean', parameters: { alpha: 0.9 }, ...extra });
  return { file, watch, layout: outLayout(path.join(dir, 'out')) };
}

describe('stream job with regmean', () => {
  it('streams exactly the Gram sums of `fisher --kind gram` on the same rows; the last version equals merge on them and the PyTorch golden', async () => {
    const dir = tempDir();
    const job = await regmeanJob(dir);
    const config = await loadStreamConfig(job.file);
    expect(config.statistic).toBe('gram');
    const result = await runStreamJob(config, { exitWhenIdleMs: 300 });
    const reference = await Promise.all(TASKS.map((task) => oneShot(dir, task, 8)));
    TASKS.forEach((task, t) => expectSameGrams(gramsOf(result.stats[task]), reference[t]!));

    // Padding is excluded: other batches change the sums only through the float32 forward at other padded lengths (measured 1e-8).
    const other = await Promise.all(TASKS.map((task) => oneShot(dir, task, 32)));
    TASKS.forEach((task, t) => {
      for (const { name } of other[t]!.inputs) expect(largestRelative(gramsOf(result.stats[task]).grams.get(name)!.sum, other[t]!.grams.get(name)!.sum), name).toBeLessThan(1e-7);
    });

    const version = await readLatest(config.out);
    const published = path.join(job.layout.versions, String(version));
    const merged = path.join(dir, 'merged');
    await mergeModels({ models: TASKS.map(modelDir), grams: reference, method: 'regmean', params: { alpha: 0.9 }, out: merged });
    for (const folder of ['encoder', ...TASKS]) {
      expect(readFileSync(path.join(published, folder, 'model.safetensors')).equals(readFileSync(path.join(merged, folder, 'model.safetensors'))), folder).toBe(true);
    }
    const ours = readSafetensors(path.join(published, 'encoder', 'model.safetensors'));
    const golden = readSafetensors(GOLDEN);
    for (const name of golden.names()) expect(largestRelative(ours.float32(name), golden.float32(name)), name).toBeLessThanOrEqual(1e-5);

    const manifest = JSON.parse(readFileSync(path.join(published, 'manifest.json'), 'utf8'));
    expect(manifest.tasks.sst2).toMatchObject({ statistic: 'gram', mode: null, examples: ROWS, data_fingerprint: reference[0]!.dataFingerprint });
    expect(manifest.tasks.sst2.fisher_fingerprint).toBe(fisherFingerprint({ ...reference[0]!, batches: ROWS / 8 }));
    const status = JSON.parse(readFileSync(job.layout.status, 'utf8'));
    expect(status.tasks.sst2.statistic).toBe('gram');
  });

  it('checkpoints the sums as one Gram file per task beside checkpoint.json, rewritten only when they change, and resumes from them', async () => {
    const dir = tempDir();
    const job = await regmeanJob(dir);
    const config = await loadStreamConfig(job.file);
    await runStreamJob(config, { exitWhenIdleMs: 300 });
    const text = readFileSync(job.layout.checkpoint, 'utf8');
    const checkpoint = JSON.parse(text);
    // No sums in checkpoint.json: names, sizes and hashes of the files that hold them.
    expect(text).not.toMatch(/gram_sum|"head"/);
    const files = readdirSync(job.layout.grams).sort();
    expect(files).toHaveLength(TASKS.length);
    for (const task of TASKS) {
      const ref = checkpoint.tasks[task].stats.file;
      expect(files).toContain(ref.name);
      expect(ref.bytes).toBe(statSync(path.join(job.layout.grams, ref.name)).size);
    }
    const before = gramsOf((await readStreamState(job.layout.checkpoint))!.tasks.sst2!.stats);
    // `status` reads checkpoint.json only (not a gigabyte of sums per BERT-base task) and names the statistic.
    const report = await readStreamStatus(config.out);
    expect(report.checkpoint!.sst2).toMatchObject({ statistic: 'gram', examples: ROWS });
    expect(formatStreamStatus(report)).toMatch(new RegExp(`\\bsst2 +gram +${ROWS} `));

    // A restart with nothing new checkpoints again (a version, the stop) without writing the sums again.
    const mtimes = files.map((f) => statSync(path.join(job.layout.grams, f)).mtimeMs);
    await runStreamJob(config, { exitWhenIdleMs: 300 });
    expect(readdirSync(job.layout.grams).sort()).toEqual(files);
    expect(files.map((f) => statSync(path.join(job.layout.grams, f)).mtimeMs)).toEqual(mtimes);

    // More rows: new files replace the old ones, and the sums are the one-shot sums of all the rows.
    const extra = await taskRows('sst2', ROWS + 24);
    publishParquet(path.join(job.watch('sst2'), 'part-9.parquet'), extra.slice(ROWS));
    const result = await runStreamJob(config, { exitWhenIdleMs: 300 });
    const after = readdirSync(job.layout.grams).sort();
    expect(after).toHaveLength(TASKS.length);
    expect(after.filter((f) => f.startsWith('sst2-'))).not.toEqual(files.filter((f) => f.startsWith('sst2-')));
    const file = path.join(dir, 'sst2-152.parquet');
    publishParquet(file, extra);
    const all = (await computeGrams({ modelDir: modelDir('sst2'), data: file, task: glueTask('sst2'), batchSize: 8, engine: 'onnx' })).stats;
    expectSameGrams(gramsOf(result.stats.sst2), all);
    expect(gramsOf(result.stats.sst2).examples).toBe(before.examples + 24);
  });

  it('a Gram file that does not match checkpoint.json is one line naming it, and the job does not start; an unnamed file is removed', async () => {
    const dir = tempDir();
    const job = await regmeanJob(dir);
    const first = cli(['stream', job.file, '--exit-when-idle', '300']);
    expect(first.status, first.stderr).toBe(0);
    const ref = JSON.parse(readFileSync(job.layout.checkpoint, 'utf8')).tasks.cola.stats.file;
    const gram = path.join(job.layout.grams, ref.name);
    const good = readFileSync(gram);
    const versions = readdirSync(job.layout.versions).sort();

    // The same out with another statistic is refused, whatever the rule.
    const maskConfig = path.join(dir, 'mask.yaml');
    writeFileSync(maskConfig, readFileSync(job.file, 'utf8').replace('merge_method: regmean', 'merge_method: mask-fisher').replace(/parameters:\n\s+alpha: 0\.9\n/, ''));
    expectRefused(cli(['stream', maskConfig, '--exit-when-idle', '300']), /checkpoint\.json: task 'sst2' was accumulated with the statistic gram, the config now says mask Fisher \(merge_method mask-fisher\); use a new 'out' directory/);

    // An orphan (a run killed between writing a Gram file and checkpoint.json) is removed at start.
    writeFileSync(path.join(job.layout.grams, 'cola-999-000000000000.safetensors'), good);
    expect(cli(['stream', job.file, '--exit-when-idle', '300']).status).toBe(0);
    expect(readdirSync(job.layout.grams)).not.toContain('cola-999-000000000000.safetensors');

    const torn = Buffer.from(good);
    torn[torn.length - 1]! ^= 1;
    writeFileSync(gram, torn);
    const escaped = gram.replaceAll('/', '\\/').replaceAll('.', '\\.');
    expectRefused(cli(['stream', job.file, '--exit-when-idle', '300']), new RegExp(`^${escaped}: has sha256 [0-9a-f]{12}…, but .*checkpoint\\.json names it for task 'cola'.*neither is used`));
    writeFileSync(gram, good.subarray(0, good.length - 8));
    expectRefused(cli(['stream', job.file, '--exit-when-idle', '300']), new RegExp(`^${escaped}: holds ${good.length - 8} bytes, but`));
    expect(readdirSync(job.layout.versions).sort()).toEqual(versions);
  });

  it('a Gram task in checkpoint.json is checked before its file is opened: a file for its examples, none without, a bare file name', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'checkpoint.json');
    const write = (stats: Record<string, unknown>) => writeFileSync(file, JSON.stringify({
      format: 'fisher-merge-stream-state/1',
      tasks: { sst2: { stats: { kind: 'gram', inputs: [{ name: 'pooler.dense', dim: 2 }], examples: 4, batches: 1, task: 'sst2', modelFingerprint: 'm', dataFingerprint: '0'.repeat(64), file: null, ...stats }, cursor: { consumed: [] }, quarantined: 0 } },
    }));
    write({});
    await expect(readStreamState(file)).rejects.toThrow(`${file}: checkpoint tasks.sst2.stats.file: expected a mapping, got null`);
    write({ examples: 0, file: { name: 'x', bytes: 8, sha256: '0'.repeat(64) } });
    await expect(readStreamState(file)).rejects.toThrow(`${file}: checkpoint tasks.sst2.stats.file: expected null (no examples yet)`);
    write({ file: { name: '../x.safetensors', bytes: 8, sha256: '0'.repeat(64) } });
    await expect(readStreamState(file)).rejects.toThrow(`${file}: checkpoint tasks.sst2.stats.file.name: expected a file name without a folder`);
    write({ examples: 2.5, file: { name: 'x', bytes: 8, sha256: '0'.repeat(64) } });
    await expect(readStreamState(file)).rejects.toThrow(`${file}: checkpoint tasks.sst2.stats.examples: expected a whole number >= 0, got 2.5`);
    write({ file: { name: 'missing.safetensors', bytes: 8, sha256: '0'.repeat(64) } });
    await expect(readStreamState(file)).rejects.toThrow(`${path.join(dir, 'grams', 'missing.safetensors')}: is missing, but ${file} names it for task 'sst2'`);
  });

  it('with a queue, the coordinator refuses regmean with one line before anything starts', async () => {
    const dir = tempDir();
    const job = await regmeanJob(dir, { queue: { url: path.join(dir, 'no-redis.sock') } });
    const run = cli(['stream', job.file, '--exit-when-idle', '300']);
    expectRefused(run, /config\.yaml: queue: not available with method regmean \(Gram statistics\): workers compute mask Fisher only; run regmean in one process \(no queue\)/);
    expect(readdirSync(dir)).not.toContain('out');
  });
});
