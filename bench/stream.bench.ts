// Soak run of `fisher-merge stream`: BENCH_STREAM_ROWS examples (default 100,000, split over the
// sst2 and cola tiny models) are all waiting as Parquet files when the job starts (the worst
// backlog), and the job drains them in batch mode (batch 32), publishing a version every 10,000
// examples per task (BENCH_STREAM_PUBLISH_EVERY). The job runs as its own process; its RSS is sampled from /proc every second
// to show that memory stays flat while the backlog shrinks.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Table, tableToIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { lastValueFrom, toArray } from 'rxjs';
import { stringify } from 'yaml';
import { glueTask, parquetSource, taskColumns } from '@fisher-merge/data';
import type { JobStatus } from '@fisher-merge/stream-job';

const REPO = path.resolve(import.meta.dirname, '..');
const TOTAL = Number(process.env.BENCH_STREAM_ROWS ?? 100_000);
const TASKS = ['sst2', 'cola'];
const FILE_ROWS = 1000;
// Examples per task between versions (BENCH_STREAM_PUBLISH_EVERY; 0 = only the final one).
const PUBLISH_EVERY = Number(process.env.BENCH_STREAM_PUBLISH_EVERY ?? 10_000);

async function writeBacklog(task: string, dir: string, rows: number): Promise<number> {
  const items = await lastValueFrom(parquetSource(path.join(REPO, 'data/glue', task, 'train-00000-of-00001.parquet'), { columns: taskColumns(glueTask(task)) }).pipe(toArray()));
  const table = new Table(items.map((i) => i.batch));
  const properties = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).build();
  let files = 0;
  // The task's training rows, cycled until `rows` have been written.
  for (let start = 0; start < rows; start += FILE_ROWS, files++) {
    const n = Math.min(FILE_ROWS, rows - start);
    const from = start % table.numRows;
    const part = from + n <= table.numRows ? table.slice(from, from + n) : table.slice(from).concat(table.slice(0, from + n - table.numRows));
    writeFileSync(path.join(dir, `part-${String(files).padStart(5, '0')}.parquet`), parquet.writeParquet(parquet.Table.fromIPCStream(tableToIPC(part, 'stream')), properties));
  }
  return files;
}

function rssMB(pid: number): number | undefined {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
    return line ? Number(line.split(/\s+/)[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

const work = mkdtempSync(path.join(tmpdir(), 'fisher-merge-stream-bench-'));
try {
  const perTask = Math.ceil(TOTAL / TASKS.length);
  let files = 0;
  for (const task of TASKS) {
    mkdirSync(path.join(work, task));
    files += await writeBacklog(task, path.join(work, task), perTask);
  }
  const out = path.join(work, 'out');
  const config = path.join(work, 'config.yaml');
  writeFileSync(config, stringify({
    out,
    engine: 'onnx',
    fisher: { mode: 'batch', batch_size: 32 },
    publish: { ...(PUBLISH_EVERY > 0 ? { every_examples: PUBLISH_EVERY } : {}), on_stop: true },
    checkpoint_every: 1,
    log_interval_s: 3600,
    tasks: TASKS.map((task) => ({ task, model: path.join(REPO, 'data/models', task), watch: path.join(work, task), stable_ms: 0 })),
  }));
  console.log(`stream soak: ${perTask * TASKS.length} examples (${TASKS.join(' + ')}), ${files} files of ${FILE_ROWS} rows waiting, batch 32, checkpoint every batch`);

  const started = performance.now();
  const child = spawn(process.execPath, [path.join(REPO, 'bin/fisher-merge.mjs'), 'stream', config, '--exit-when-idle', '1500'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exit = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const samples: { s: number; rss: number; heap: number; examples: number; backlog: number; rate: number }[] = [];
  let done = false;
  void exit.then(() => (done = true));
  while (!done) {
    await sleep(1000);
    const rss = rssMB(child.pid!);
    let status: JobStatus | undefined;
    try {
      status = JSON.parse(readFileSync(path.join(out, 'status.json'), 'utf8')) as JobStatus;
    } catch {
      status = undefined;
    }
    if (rss === undefined) continue;
    const tasks = Object.values(status?.tasks ?? {});
    samples.push({
      s: (performance.now() - started) / 1000,
      rss,
      heap: status?.memory.heap_used_mb ?? 0,
      examples: tasks.reduce((n, t) => n + t.examples, 0),
      backlog: tasks.reduce((n, t) => n + (t.backlog_files ?? 0), 0),
      rate: tasks.reduce((n, t) => n + t.examples_per_s, 0),
    });
  }
  const code = await exit;
  if (code !== 0) throw new Error(`stream job exited with ${code}:\n${stderr}`);
  const seconds = (performance.now() - started) / 1000;
  const final = JSON.parse(readFileSync(path.join(out, 'status.json'), 'utf8')) as JobStatus;
  const examples = Object.values(final.tasks).reduce((n, t) => n + t.examples, 0);

  // One row per tenth of the run: RSS should not follow the examples processed.
  const table: string[][] = [['t (s)', 'examples', 'ex/s', 'files waiting', 'RSS (MB)', 'JS heap (MB)']];
  for (let k = 1; k <= 10; k++) {
    const s = samples[Math.min(samples.length - 1, Math.floor((samples.length * k) / 10) - 1)];
    if (s) table.push([s.s.toFixed(0), String(s.examples), s.rate.toFixed(1), String(s.backlog), s.rss.toFixed(0), s.heap.toFixed(0)]);
  }
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const row of table) console.log(row.map((c, i) => c.padStart(widths[i]!)).join('  '));
  const rss = samples.map((s) => s.rss);
  const steady = rss.slice(Math.floor(rss.length / 10));
  const half = Math.floor(steady.length / 2);
  const peak = (xs: number[]) => Math.max(...xs);
  console.log(`examples: ${examples} in ${seconds.toFixed(1)} s (incl. startup and ${final.last_version} published versions) = ${(examples / seconds).toFixed(1)} examples/s`);
  const heap = samples.slice(Math.floor(samples.length / 10)).map((s) => s.heap);
  console.log(`peak RSS: ${peak(rss).toFixed(0)} MB; steady state (after the first 10%): first half peak ${peak(steady.slice(0, half)).toFixed(0)} MB, second half peak ${peak(steady.slice(half)).toFixed(0)} MB`);
  console.log(`JS heap in use, steady state: first half peak ${peak(heap.slice(0, half)).toFixed(0)} MB, second half peak ${peak(heap.slice(half)).toFixed(0)} MB (each publish loads every model once more)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
