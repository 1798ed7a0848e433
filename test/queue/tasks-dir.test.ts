import { once } from 'node:events';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { glueTask } from '@fisher-merge/data';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { outLayout, readStreamState } from '@fisher-merge/stream-job';
import { logLines } from '../support.ts';
import { expectSameStats, modelDir, publishParquet, taskRows, tempDir } from '../stream-job/helpers.ts';
import { eventually, incoming, startCli, startWorker, stopWorker, withRedis } from './helpers.ts';

// A guard against a hang, not a speed requirement: these runs start several processes on a loaded machine.
const HANG_GUARD_MS = 900_000;

const PARTS = [32, 32];
const ROWS = 64;

/** A task file written the way a careful producer does: a hidden temp name, then rename. */
function writeTaskFile(file: string, task: string, watch: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  writeFileSync(tmp, stringify({ task, model: modelDir(task), watch, ready: 'stable', stable_ms: 0, poll_ms: 50 }));
  renameSync(tmp, file);
}

describe('queue: tasks that join and leave (tasks_dir)', () => {
  it('a running worker serves a task that joins the job without a restart, and stops serving one that leaves; the statistics equal the one-shot Fisher', async () => {
    await withRedis(async (redis) => {
      const dir = tempDir();
      const watch = await incoming(dir, ['sst2', 'cola'], PARTS);
      const tasksDir = path.join(dir, 'tasks');
      mkdirSync(tasksDir);
      writeTaskFile(path.join(tasksDir, 'sst2.yaml'), 'sst2', watch.sst2!);
      const config = path.join(dir, 'config.yaml');
      writeFileSync(config, stringify({
        out: path.join(dir, 'out'),
        engine: 'onnx',
        fisher: { mode: 'batch', batch_size: 8 },
        source_batch_rows: 16,
        tasks_dir: tasksDir,
        tasks_dir_poll_ms: 50,
        publish: { on_stop: false },
        queue: { url: redis.socket, prefix: 'joins', max_pending: 2, claim_idle_ms: 300, connect_timeout_s: 600 },
      }));
      const checkpoint = outLayout(path.join(dir, 'out')).checkpoint;
      const examples = async (task: string) => (await readStreamState(checkpoint).catch(() => undefined))?.tasks[task]?.stats.examples ?? 0;

      const worker = startWorker(config);
      await worker.line('worker.waiting');
      const coordinator = startCli(['stream', config]);
      await worker.line('worker.joined', (l) => l.task === 'sst2');
      await eventually('an sst2 batch folded', async () => (await examples('sst2')) > 0, Infinity);

      // The second task joins the running job: the same worker process serves it.
      writeTaskFile(path.join(tasksDir, 'cola.yaml'), 'cola', watch.cola!);
      await worker.line('worker.joined', (l) => l.task === 'cola');
      await eventually('every row of both folded', async () => {
        if (coordinator.child.exitCode !== null) throw new Error(`the coordinator exited (${coordinator.child.exitCode}):\n${coordinator.stderr()}`);
        return (await examples('sst2')) === ROWS && (await examples('cola')) === ROWS;
      }, Infinity);

      // The first leaves: the worker stops serving it, and goes on running.
      rmSync(path.join(tasksDir, 'sst2.yaml'));
      await coordinator.line('stream.task_left', (l) => l.task === 'sst2');
      await worker.line('worker.left', (l) => l.task === 'sst2');
      expect(worker.child.exitCode).toBeNull();

      coordinator.child.kill('SIGTERM');
      expect((await once(coordinator.child, 'exit'))[0], coordinator.stderr()).toBe(0);
      expect(await stopWorker(worker.child), worker.stderr()).toBe(0);
      const lines = logLines(worker.stderr());
      expect(lines.filter((l) => l.event === 'worker.waiting')).toHaveLength(1);
      expect(lines.filter((l) => l.event === 'worker.batch' && l.task === 'cola').length).toBeGreaterThan(0);

      const state = (await readStreamState(checkpoint))!;
      for (const task of ['sst2', 'cola']) {
        const file = path.join(dir, `${task}.parquet`);
        publishParquet(file, await taskRows(task, ROWS));
        const reference = (await computeMaskFisher({ modelDir: modelDir(task), data: file, task: glueTask(task), batchSize: 8, mode: 'batch', engine: 'onnx' })).stats;
        expectSameStats(state.tasks[task]!.stats, reference);
      }
    });
  }, HANG_GUARD_MS);
});
