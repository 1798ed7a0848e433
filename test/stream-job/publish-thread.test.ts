import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { loadStreamConfig, runStreamJob } from '@fisher-merge/stream-job';
import { writeRandomCheckpoint } from '../../bench/random-checkpoint.ts';
import { partialFiles } from '../support.ts';
import { publishParquet, split, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

const FILES = 24;
const ROWS_PER_FILE = 2;

describe('stream job: publishing off the loop', () => {
  it('folds batches while a version is being merged (files finish while a version file is half written)', async () => {
    const dir = tempDir();
    // Large enough that writing a version takes a while: 4 layers of 512, a BERT vocabulary (about 28M weights).
    const model = path.join(dir, 'model');
    await writeRandomCheckpoint(model, { numLayers: 4, hiddenSize: 512, numHeads: 8, intermediateSize: 2048 });
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    // One batch per file, so each folded batch logs the file it finished.
    split(await taskRows('sst2', FILES * ROWS_PER_FILE), Array.from({ length: FILES }, () => ROWS_PER_FILE))
      .forEach((part, i) => publishParquet(path.join(watch, `part-${String(i).padStart(3, '0')}.parquet`), part));
    const config = await loadStreamConfig(writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch, model }], {
      fisher: { mode: 'batch', batch_size: ROWS_PER_FILE },
      publish: { every_examples: ROWS_PER_FILE, on_stop: false },
    }));
    const logged: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array) => {
      logged.push(...String(chunk).split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { event: string }).event));
      return true;
    }) as typeof process.stderr.write);
    let settled = false;
    const running = runStreamJob(config, { exitWhenIdleMs: 500 }).finally(() => (settled = true));
    // Each turn of this loop notes the version files being written and the batches folded so far. A
    // merge on the job's loop writes each file in one synchronous pass: no turn could see it at all.
    const folded = new Map<string, Set<number>>();
    while (!settled) {
      const done = logged.filter((e) => e === 'stream.file_done').length;
      for (const [file] of partialFiles(config.out)) folded.set(file, (folded.get(file) ?? new Set()).add(done));
      await turn();
    }
    const result = await running.finally(() => spy.mockRestore());
    expect(result.stats.sst2!.examples).toBe(FILES * ROWS_PER_FILE);
    expect(logged.filter((e) => e === 'stream.published').length).toBeGreaterThan(0);
    // Some version file was seen half written with different counts of folded batches: batches were folded while it was written.
    const foldedWhileWriting = [...folded.values()].filter((counts) => counts.size >= 2);
    expect(foldedWhileWriting.length, JSON.stringify([...folded].map(([f, c]) => [f, [...c]]))).toBeGreaterThan(0);
  });
});
