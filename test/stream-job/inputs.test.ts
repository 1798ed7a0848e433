import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { RecordBatchStreamWriter, tableFromArrays, type Table } from 'apache-arrow';
import { describe, expect, it, vi } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { loadStreamConfig, outLayout, parseStreamConfig, readStreamState, readStreamStatus, runStreamJob } from '@fisher-merge/stream-job';
import { eventually } from '../support.ts';
import { maskFisherOf, modelDir, publishParquet, REPO, split, taskRows, tempDir, writeStreamConfig } from './helpers.ts';

describe('stream job inputs', () => {
  it('quarantines malformed files arriving mid-stream with a logged reason and goes on', async () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    const [first, second] = split(await taskRows('sst2', 40), [24, 16]);
    const config = await loadStreamConfig(writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch }]));
    const logged: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array) => {
      logged.push(String(chunk));
      return true;
    }) as typeof process.stderr.write);
    const drain = new AbortController();
    const checkpoint = outLayout(config.out).checkpoint;
    const arrive = (async () => {
      publishParquet(path.join(watch, 'a-good.parquet'), first!);
      // The bad files arrive once the job has counted the first file: mid-stream.
      await eventually('a-good counted', async () => (await readStreamState(checkpoint).catch(() => undefined))?.tasks.sst2?.stats.examples === 24);
      writeFileSync(path.join(watch, 'b-garbage.parquet'), 'PAR1 this is not a parquet file');
      publishParquet(path.join(watch, 'c-no-label.parquet'), tableFromArrays({ sentence: ['fine', 'text'] }));
      publishParquet(path.join(watch, 'd-bad-label.parquet'), tableFromArrays({ sentence: ['x', 'y'], label: Int32Array.from([1, 7]) }));
      await eventually('the bad files quarantined', async () => (await readStreamState(checkpoint).catch(() => undefined))?.tasks.sst2?.quarantined === 3);
      publishParquet(path.join(watch, 'e-good.parquet'), second!);
      drain.abort();
    })();
    const result = await runStreamJob(config, { drain: drain.signal }).finally(() => spy.mockRestore());
    await arrive;

    expect(result.stats.sst2!.examples).toBe(40);
    const quarantine = path.join(config.out, 'quarantine', 'sst2');
    const moved = readdirSync(quarantine).sort();
    expect(moved.filter((f) => f.endsWith('.parquet')).map((f) => f.replace(/^.*?-(?=[a-e]-)/, ''))).toEqual(['b-garbage.parquet', 'c-no-label.parquet', 'd-bad-label.parquet']);
    const reasons = moved.filter((f) => f.endsWith('.reason.txt')).map((f) => readFileSync(path.join(quarantine, f), 'utf8'));
    expect(reasons.join('')).toMatch(/cannot read Parquet file/);
    expect(reasons.join('')).toMatch(/column 'label' not found/);
    expect(reasons.join('')).toMatch(/is 7, expected a class index/);
    expect(readdirSync(watch).sort()).toEqual(['a-good.parquet', 'e-good.parquet']);
    const events = logged.filter((l) => l.includes('"stream.quarantined"')).map((l) => JSON.parse(l));
    expect(events.map((e) => e.file).sort()).toEqual(['b-garbage.parquet', 'c-no-label.parquet', 'd-bad-label.parquet']);
    expect(events.every((e) => typeof e.reason === 'string' && e.reason.length > 0)).toBe(true);

    const report = await readStreamStatus(config.out);
    expect(report.checkpoint!.sst2).toMatchObject({ examples: 40, files_consumed: 2, quarantined: 3 });
    expect(report.latest!.tasks.sst2!.examples).toBe(40);
  });

  it('follows an Arrow IPC stream file while a writer appends to it', async () => {
    const dir = tempDir();
    const rows = await taskRows('sst2', 50);
    const stream = path.join(dir, 'sst2.arrows');
    const bytes = RecordBatchStreamWriter.writeAll(split(rows, [20, 30]).flatMap((t) => t.batches)).toUint8Array(true);
    writeFileSync(stream, bytes.subarray(0, 1000));
    const configFile = path.join(dir, 'config.yaml');
    writeFileSync(configFile, `out: out\nengine: onnx\nfisher: { mode: example, batch_size: 8 }\ntasks:\n  - { task: sst2, model: ${modelDir('sst2')}, ipc: sst2.arrows, poll_ms: 50 }\n`);
    const config = await loadStreamConfig(configFile);
    const drain = new AbortController();
    const appending = (async () => {
      // Cut mid-message: the reader must wait for the rest instead of failing. The rest comes once
      // the job is running (its first status file), then the input is declared finished.
      await eventually('the job running', () => existsSync(outLayout(config.out).status));
      appendFileSync(stream, bytes.subarray(1000, 3000));
      appendFileSync(stream, bytes.subarray(3000));
      drain.abort();
    })();
    const result = await runStreamJob(config, { drain: drain.signal, statusIntervalMs: 20 });
    await appending;
    const file = path.join(dir, 'all.parquet');
    publishParquet(file, rows);
    const reference = (await computeMaskFisher({ modelDir: modelDir('sst2'), data: file, task: glueTask('sst2'), batchSize: 8, mode: 'example', engine: 'onnx' })).stats;
    expect(result.stats.sst2!.examples).toBe(50);
    expect(result.stats.sst2!.dataFingerprint).toBe(reference.dataFingerprint);
    maskFisherOf(result.stats.sst2!).head.forEach((v, k) => expect(v).toBeCloseTo(reference.head[k]!, 8));
  });

  it('reads an Arrow IPC stream on stdin; a restart fed the replayed stream skips the rows already counted', async () => {
    const dir = tempDir();
    const rows = await taskRows('sst2', 40);
    const configFile = path.join(dir, 'config.yaml');
    writeFileSync(configFile, `out: out\nengine: onnx\nfisher: { mode: example, batch_size: 8 }\ntasks:\n  - { task: sst2, model: ${modelDir('sst2')}, ipc: '-' }\n`);
    const feed = async (table: Table): Promise<number | null> => {
      const child = spawn(process.execPath, [path.join(REPO, 'bin/fisher-merge.mjs'), 'stream', configFile, '--exit-when-idle', '200'], { stdio: ['pipe', 'ignore', 'ignore'] });
      child.stdin!.end(RecordBatchStreamWriter.writeAll(table.batches).toUint8Array(true));
      return new Promise((resolve) => child.once('exit', resolve));
    };
    expect(await feed(rows.slice(0, 30))).toBe(0);
    const checkpoint = outLayout(path.join(dir, 'out')).checkpoint;
    expect((await readStreamState(checkpoint))!.tasks.sst2!.cursor.current).toEqual({ file: '<stream>', row: 30 });
    expect(await feed(rows)).toBe(0);
    const state = (await readStreamState(checkpoint))!.tasks.sst2!;
    expect(state.stats.examples).toBe(40);
    expect(state.cursor.current).toEqual({ file: '<stream>', row: 40 });
  });

  it('refuses a restart with other job-wide settings, naming the setting and the first task of the config, before any model loads', async () => {
    const dir = tempDir();
    const out = path.join(dir, 'out');
    const watches = ['sst2', 'cola'].map((task) => {
      const watch = path.join(dir, task);
      mkdirSync(watch);
      return { task, watch };
    });
    publishParquet(path.join(watches[0]!.watch, 'part-0.parquet'), await taskRows('sst2', 8));
    publishParquet(path.join(watches[1]!.watch, 'part-0.parquet'), await taskRows('cola', 8));
    const first = await loadStreamConfig(writeStreamConfig(path.join(dir, 'a.yaml'), out, watches));
    await runStreamJob(first, { exitWhenIdleMs: 200 });
    const checkpoint = outLayout(out).checkpoint;
    const before = readFileSync(checkpoint, 'utf8');
    const restart = async (fisher: Record<string, unknown>) => runStreamJob(await loadStreamConfig(writeStreamConfig(path.join(dir, 'b.yaml'), out, watches, { fisher })), { exitWhenIdleMs: 200 });
    await expect(restart({ mode: 'example' })).rejects.toThrow(`${checkpoint}: task 'sst2' was accumulated with fisher.mode batch, the config now says example; use a new 'out' directory`);
    await expect(restart({ mode: 'batch', batch_size: 4 })).rejects.toThrow(`${checkpoint}: task 'sst2' was accumulated with fisher.batch_size 8, the config now says 4; use a new 'out' directory`);
    // Nothing was folded or written by the refused runs.
    expect(readFileSync(checkpoint, 'utf8')).toBe(before);
  });

  it('rejects bad configs with one line naming the key', () => {
    const base = { out: 'o', tasks: [{ task: 'sst2', model: 'm', watch: 'w' }] };
    const bad = (raw: unknown) => () => parseStreamConfig(raw, '/x', 'c.yaml');
    expect(bad({ ...base, fisher: { mode: 'exact' } })).toThrow('c.yaml: fisher.mode: expected one of batch, example, got "exact"');
    expect(bad({ ...base, fisher: { batch_size: 0 } })).toThrow('c.yaml: fisher.batch_size: expected an integer >= 1, got 0');
    expect(bad({ ...base, publsh: {} })).toThrow('c.yaml: publsh: unknown key (known: out, engine,');
    expect(bad({ ...base, tasks: [{ task: 'sst2', model: 'm' }] })).toThrow("c.yaml: tasks[0]: needs exactly one source");
    expect(bad({ ...base, tasks: [{ task: 'nope', model: 'm', watch: 'w' }] })).toThrow('c.yaml: tasks[0].task: expected one of sst2, cola,');
    expect(bad({ ...base, tasks: [{ task: 'sst2', model: 'm', watch: 'w', ready: 'soon' }] })).toThrow('c.yaml: tasks[0].ready: expected one of stable, marker, got "soon"');
    expect(bad({ out: 'o' })).toThrow("c.yaml: tasks: expected a non-empty list of task entries or 'tasks_dir' (a directory of task files), got nothing");
    const ok = parseStreamConfig({ ...base, publish: { every_examples: 100 } }, '/x', 'c.yaml');
    expect(ok.out).toBe('/x/o');
    expect(ok.tasks[0]!.input).toMatchObject({ kind: 'watch', dir: '/x/w', ready: { kind: 'stable', ms: 2000 } });
    expect(ok.flowWindow).toBe(33);
  });
});
