import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { concatMap, of } from 'rxjs';
import { describe, expect, it, vi } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { loadStreamConfig, localCompute, outLayout, readStreamState, runStreamJob, type TaskCompute } from '@fisher-merge/stream-job';
import { maskFisherOf, modelDir, publishParquet, split, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

describe('stream job: a batch the queue dead-lettered', () => {
  it('moves the cursor over its rows, counts them as skipped (checkpoint, status, manifest, log) and folds the others exactly', async () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    const rows = await taskRows('sst2', 24);
    publishParquet(path.join(watch, 'part-0.parquet'), rows);
    const config = await loadStreamConfig(writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch }]));
    // In process, as the queue's contract says: the second batch of 8 comes back dead, the others computed.
    const compute = async (task: Parameters<typeof localCompute>[0]): Promise<TaskCompute> => {
      const local = await localCompute(task, undefined);
      return { ...local, contributions: (stop$) => concatMap((batch, i) => (i === 1 ? of({ batch, dead: { reason: 'poison batch' } }) : of(batch).pipe(local.contributions(stop$)))) };
    };
    const logged: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array) => {
      logged.push(String(chunk));
      return true;
    }) as typeof process.stderr.write);
    const result = await runStreamJob(config, { exitWhenIdleMs: 300, compute }).finally(() => spy.mockRestore());

    // Rows 0-7 and 16-23 in the same batches: the one-shot Fisher of those rows.
    const [first, , third] = split(rows, [8, 8, 8]);
    const kept = path.join(dir, 'kept.parquet');
    publishParquet(kept, first!.concat(third!));
    const reference = (await computeMaskFisher({ modelDir: modelDir('sst2'), data: kept, task: glueTask('sst2'), batchSize: 8, mode: 'batch', engine: 'onnx' })).stats;
    const got = maskFisherOf(result.stats.sst2!);
    expect(got.examples).toBe(16);
    expect(got.dataFingerprint).toBe(reference.dataFingerprint);
    expect(Array.from(got.head)).toEqual(Array.from(reference.head));

    const layout = outLayout(config.out);
    const state = (await readStreamState(layout.checkpoint))!.tasks.sst2!;
    expect(state.skippedRows).toBe(8);
    expect(state.cursor).toEqual({ consumed: new Set(['part-0.parquet']) });
    expect(JSON.parse(readFileSync(layout.status, 'utf8')).tasks.sst2.skipped_rows).toBe(8);
    expect(JSON.parse(readFileSync(path.join(layout.versions, String(result.lastVersion), 'manifest.json'), 'utf8')).tasks.sst2.skipped_rows).toBe(8);
    const dead = logged.filter((l) => l.includes('"stream.batch_dead"')).map((l) => JSON.parse(l));
    expect(dead).toMatchObject([{ task: 'sst2', rows: 8, reason: 'poison batch' }]);

    // A restart reads nothing again: the dead rows are behind the cursor.
    const again = await runStreamJob(config, { exitWhenIdleMs: 300 });
    expect(again.stats.sst2!.examples).toBe(16);
    expect((await readStreamState(layout.checkpoint))!.tasks.sst2!.skippedRows).toBe(8);
  });
});
