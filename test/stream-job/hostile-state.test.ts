// A stream job never publishes a non-finite candidate and never resumes from a corrupt checkpoint.
import { existsSync, mkdirSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { MAX_CHECKPOINT_BYTES, outLayout, readStreamState } from '@fisher-merge/stream-job';
import { cli, expectRefused } from '../reliability/support.ts';
import { logLines } from '../support.ts';
import { publishParquet, REPO, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

/** A drained sst2 job over 20 rows whose config `edit` changes; returns its folder, config file and CLI run. */
async function drainedJob(edit: (config: Record<string, unknown>) => void = () => undefined) {
  const dir = tempDir();
  const watch = path.join(dir, 'incoming');
  mkdirSync(watch);
  publishParquet(path.join(watch, 'part-0.parquet'), await taskRows('sst2', 20));
  const file = writeStreamConfig(path.join(dir, 'stream.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch }]);
  const config = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(config);
  writeFileSync(file, stringify(config));
  return { dir, file, layout: outLayout(path.join(dir, 'out')), run: () => cli(['stream', file, '--exit-when-idle', '300']) };
}

describe('stream job: no non-finite version is ever published', () => {
  it('a candidate whose merge overflows is logged as stream.version_failed, kept out of versions/, latest unchanged, and the job goes on', async () => {
    // Task arithmetic with a weight of 1e308: every merged tensor overflows float32.
    const job = await drainedJob((c) => {
      Object.assign(c, { merge_method: 'task-arithmetic', base_model: path.join(REPO, 'data/models/base'), publish: { every_examples: 8, on_stop: true } });
      (c.tasks as Array<Record<string, unknown>>)[0]!.lambda = 1e308;
    });
    const run = job.run();
    expect(run.status, run.stderr).toBe(0);
    const lines = logLines(run.stderr);
    const failed = lines.filter((l) => l.event === 'stream.version_failed');
    // every_examples fired after batches 1 and 2, and the stop published once more: three candidates, all refused.
    expect(failed.length).toBeGreaterThanOrEqual(2);
    for (const l of failed) expect(l.error).toMatch(/^merge: tensor 'bert\..*' element \d+ is not finite: the merge computed -?(Infinity|NaN)/);
    expect(lines.filter((l) => l.event === 'stream.published')).toEqual([]);
    expect(readdirSync(job.layout.versions)).toEqual([]);
    expect(existsSync(job.layout.latest)).toBe(false);
    // The job went on: every row was folded after the first refusal.
    expect((await readStreamState(job.layout.checkpoint))!.tasks.sst2!.stats.examples).toBe(20);
  });
});

/** The parts of checkpoint.json the cases edit. */
interface Checkpoint {
  tasks: Record<string, { stats: Record<string, unknown> & { head: string; neuron: string }; cursor: Record<string, unknown> }>;
  published: { tasks: Record<string, unknown> };
}

describe('stream job: a corrupt checkpoint is one line naming the file, never used', () => {
  /** A finished job's checkpoint, edited by `corrupt`; the restarted job must refuse it and publish nothing new. */
  async function refusedRestart(corrupt: (checkpoint: Checkpoint) => void, pattern: RegExp): Promise<void> {
    const job = await drainedJob();
    expect(job.run().status).toBe(0);
    const checkpoint = JSON.parse(readFileSync(job.layout.checkpoint, 'utf8')) as Checkpoint;
    const versions = readdirSync(job.layout.versions).sort();
    const latest = readFileSync(job.layout.latest, 'utf8');
    corrupt(checkpoint);
    writeFileSync(job.layout.checkpoint, JSON.stringify(checkpoint));
    await expect(readStreamState(job.layout.checkpoint)).rejects.toThrow(pattern);
    const run = job.run();
    expectRefused(run, new RegExp(`${job.layout.checkpoint.replaceAll('/', '\\/')}: .*${pattern.source}`));
    expect(readdirSync(job.layout.versions).sort()).toEqual(versions);
    expect(readFileSync(job.layout.latest, 'utf8')).toBe(latest);
  }
  const f64 = (values: number[]) => Buffer.from(Float64Array.from(values).buffer).toString('base64');
  const withValue = (base64: string, index: number, value: number): string => {
    const values = new Float64Array(Uint8Array.from(Buffer.from(base64, 'base64')).buffer);
    values[index] = value;
    return Buffer.from(values.buffer).toString('base64');
  };

  it('a NaN in a Fisher sum (it used to publish a version whose encoder is NaN and move latest to it)', async () => {
    await refusedRestart((c) => { c.tasks.sst2!.stats.head = withValue(c.tasks.sst2!.stats.head, 3, NaN); }, /tasks\.sst2\.stats\.head' holds NaN at element 3 \(\[1, 1\]\)/);
  });

  it('a negative Fisher sum', async () => {
    await refusedRestart((c) => { c.tasks.sst2!.stats.neuron = withValue(c.tasks.sst2!.stats.neuron, 5, -1); }, /tasks\.sst2\.stats\.neuron' holds -1 at element 5 .*sum of squares/);
  });

  it('sums of the wrong length for L x H', async () => {
    await refusedRestart((c) => { c.tasks.sst2!.stats.head = f64([1, 2, 3]); }, /checkpoint tasks\.sst2\.stats\.head: expected 4 float64 values \(2 x 2\), got "24 bytes"/);
  });

  it('an unknown key', async () => {
    await refusedRestart((c) => { c.tasks.sst2!.stats.extra = 1; }, /checkpoint tasks\.sst2\.stats\.extra: expected no such key/);
  });

  it('a cursor row that is not a whole number, and a consumed name with a folder part', async () => {
    await refusedRestart((c) => { c.tasks.sst2!.cursor.current = { file: 'part-0.parquet', row: -2 }; }, /checkpoint tasks\.sst2\.cursor\.current\.row: expected a whole number >= 0, got -2/);
    await refusedRestart((c) => { c.tasks.sst2!.cursor.consumed = ['../../etc/passwd']; }, /checkpoint tasks\.sst2\.cursor\.consumed\[0\]: expected a file name without a folder/);
  });

  it('a published mark for a task the checkpoint does not hold', async () => {
    await refusedRestart((c) => { c.published.tasks.cola = c.published.tasks.sst2; }, /checkpoint published\.tasks\.cola: expected no such key/);
  });

  it('a checkpoint.json larger than MAX_CHECKPOINT_BYTES is refused before it is read', async () => {
    const job = await drainedJob();
    expect(job.run().status).toBe(0);
    // Sparse: the size is what is checked, not the bytes.
    truncateSync(job.layout.checkpoint, MAX_CHECKPOINT_BYTES + 1);
    const pattern = new RegExp(`^${job.layout.checkpoint.replaceAll('/', '\\/').replaceAll('.', '\\.')}: checkpoint is ${MAX_CHECKPOINT_BYTES + 1} bytes, more than the ${MAX_CHECKPOINT_BYTES} \\(256 MiB\\) a checkpoint may have; it is not used`);
    await expect(readStreamState(job.layout.checkpoint)).rejects.toThrow(pattern);
    expectRefused(job.run(), pattern);
  });
});
