// The stream job single-process against the coordinator with 1 and 2 workers through a real
// redis-server, on the tiny fixture model and on BERT-base shape (random L12 H768, written by
// random-checkpoint.ts), every engine at --threads 1: examples/s while the job drains a backlog of
// sst2 rows, from the first folded batch to the last, so process start-up and model loading are left
// out for every variant alike; and the coordinator's CPU time (user + system, from /proc) per batch
// over the same window: how many workers one coordinator can feed. The times are the ones the job
// stamps on each checkpoint (its clock when it wrote that state down), not when this process sees
// the file: a single-process job computes on its JavaScript thread (onnxruntime-node runs a session
// synchronously there), so its checkpoint writes land batches late, and a reader's clock would start
// the window late and overstate its rate (by 35% on BERT-base here). --repeat runs every variant again
// (each run's rows are printed; compare ratios within a run on a shared machine).
// Then Redis memory while the coordinator works through a backlog of 100k batches (batch size 1)
// with queue.max_pending set: it stays at a few max_pending batches, whatever the backlog.
//   npx tsx bench/queue.bench.ts [--tiny-rows 8192] [--base-rows 512] [--repeat 1] [--backlog 100000] [--max-pending 64]
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Table, tableToIPC } from 'apache-arrow';
import { Redis } from 'ioredis';
import * as parquet from 'parquet-wasm';
import { lastValueFrom, toArray } from 'rxjs';
import { stringify } from 'yaml';
import { glueTask, parquetSource, taskColumns } from '@fisher-merge/data';
import { readStreamState } from '@fisher-merge/stream-job';
import { writeRandomCheckpoint } from './random-checkpoint.ts';

const { values: args } = parseArgs({
  options: {
    'tiny-rows': { type: 'string', default: '8192' },
    'base-rows': { type: 'string', default: '512' },
    repeat: { type: 'string', default: '1' },
    backlog: { type: 'string', default: '100000' },
    'max-pending': { type: 'string', default: '64' },
    'memory-seconds': { type: 'string', default: '20' },
  },
});
const REPO = path.resolve(import.meta.dirname, '..');
const BATCH = 32;
const CLI = path.join(REPO, 'bin/fisher-merge.mjs');
const work = mkdtempSync(path.join(tmpdir(), 'fisher-merge-queue-bench-'));
const children: ChildProcess[] = [];
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

const sst2 = new Table((await lastValueFrom(parquetSource(path.join(REPO, 'data/glue/sst2/train-00000-of-00001.parquet'), { columns: taskColumns(glueTask('sst2')) }).pipe(toArray()))).map((i) => i.batch));

/** `rows` sst2 training rows (cycled) as Parquet files of 1000 rows in a fresh directory. */
function backlog(name: string, rows: number): string {
  const dir = path.join(work, name);
  mkdirSync(dir, { recursive: true });
  const properties = new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).build();
  for (let start = 0, i = 0; start < rows; start += 1000, i++) {
    const n = Math.min(1000, rows - start);
    const from = start % sst2.numRows;
    const part = from + n <= sst2.numRows ? sst2.slice(from, from + n) : sst2.slice(from).concat(sst2.slice(0, from + n - sst2.numRows));
    writeFileSync(path.join(dir, `part-${String(i).padStart(5, '0')}.parquet`), parquet.writeParquet(parquet.Table.fromIPCStream(tableToIPC(part, 'stream')), properties));
  }
  return dir;
}

function config(name: string, model: string, watch: string, extra: Record<string, unknown>): string {
  const file = path.join(work, `${name}.yaml`);
  writeFileSync(file, stringify({ out: path.join(work, name), engine: 'onnx', fisher: { mode: 'batch', batch_size: BATCH }, publish: { on_stop: false }, log_interval_s: 3600, ...extra, tasks: [{ task: 'sst2', model, watch, stable_ms: 0, poll_ms: 50 }] }));
  return file;
}

function start(args: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' });
  children.push(child);
  return child;
}

/** Resolves once `child` has exited, including when it already had (a late `once(child, 'exit')` would wait forever). */
function exited(child: ChildProcess): Promise<unknown> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, 'exit');
}

async function startRedis(): Promise<{ socket: string; client: Redis; stop: () => Promise<void> }> {
  const dir = path.join(work, 'redis');
  mkdirSync(dir, { recursive: true });
  const socket = path.join(dir, 'redis.sock');
  const server = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  children.push(server);
  const client = new Redis({ path: socket, maxRetriesPerRequest: null, retryStrategy: () => 50 });
  client.on('error', () => undefined);
  await client.ping();
  return { socket, client, stop: async () => { client.disconnect(); server.kill('SIGTERM'); await once(server, 'exit'); } };
}

/** User + system CPU seconds a process has used so far (Linux /proc; clock ticks of 1/100 s); undefined once it has exited. */
function cpuSeconds(pid: number): number | undefined {
  const stat = (() => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return undefined;
    }
  })();
  const fields = stat?.replace(/^.*\) /, '').split(' ');
  return fields && fields[0] !== 'Z' ? (Number(fields[11]) + Number(fields[12])) / 100 : undefined;
}

/** The examples a checkpoint holds and the time the job stamped on it (when it wrote that state down, however late the file lands). */
function checkpointed(file: string): { n: number; at: number } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  // Written whole (temporary file, then rename); the raw JSON, as readStreamState keeps no time.
  const state = JSON.parse(text) as { time: string; tasks: Record<string, { stats: { examples: number } }> };
  return { n: state.tasks.sst2?.stats.examples ?? 0, at: Date.parse(state.time) };
}

/** Examples/s from the first folded batch seen to the last, by the checkpoints' own times, and the job's CPU seconds over that window. */
async function drain(out: string, total: number, job: ChildProcess): Promise<{ rate: number; cpu: number; batches: number }> {
  const checkpoint = path.join(out, 'state', 'checkpoint.json');
  let first: { n: number; at: number; cpu: number } | undefined;
  let cpu = 0;
  for (;;) {
    // CPU first: the job exits soon after its last fold (the last reading before that counts).
    cpu = cpuSeconds(job.pid!) ?? cpu;
    const seen = checkpointed(checkpoint);
    if (seen && seen.n > 0 && !first) first = { ...seen, cpu };
    // NaN when the first checkpoint seen already held every row (give more rows).
    if (seen && seen.n >= total) return { rate: first!.n < total ? (total - first!.n) / ((seen.at - first!.at) / 1000) : NaN, cpu: cpu - first!.cpu, batches: Math.ceil((total - first!.n) / BATCH) };
    if (job.exitCode !== null) throw new Error(`${out}: the job exited (${job.exitCode}) at ${seen?.n ?? 0} of ${total} examples`);
    await pause(50);
  }
}

const redis = await startRedis();
const rows: string[][] = [];
const models = [
  { name: 'tiny (fixture L2 H128)', key: 'tiny', dir: path.join(REPO, 'data/models/sst2'), rows: Number(args['tiny-rows']) },
  { name: 'BERT-base (random L12 H768)', key: 'base', dir: path.join(work, 'base-model'), rows: Number(args['base-rows']) },
];
await writeRandomCheckpoint(models[1]!.dir, { numLayers: 12, hiddenSize: 768, numHeads: 12, intermediateSize: 3072 });
const backlogs = models.map((model) => backlog(`rows-${model.rows}`, model.rows));
for (let run = 1; run <= Number(args.repeat); run++) {
  for (const [m, model] of models.entries()) {
    const runs: { rate: number; cpu: number; batches: number }[] = [];
    for (const workers of [0, 1, 2]) {
      const name = `${model.key}-${workers}-${run}`;
      const file = config(name, model.dir, backlogs[m]!, workers === 0 ? {} : { queue: { url: redis.socket, prefix: name, max_pending: 16 } });
      const job = start(['stream', file, '--exit-when-idle', '300', ...(workers === 0 ? ['--threads', '1'] : [])]);
      const pool: ChildProcess[] = [];
      if (workers > 0) {
        while ((await redis.client.hget(`${name}:job`, 'run')) === null) await pause(20);
        for (let w = 0; w < workers; w++) pool.push(start(['worker', file, '--threads', '1']));
      }
      runs.push(await drain(path.join(work, name), model.rows, job));
      await exited(job);
      for (const w of pool) w.kill('SIGTERM');
      await Promise.all(pool.map(exited));
    }
    const [single, one, two] = runs as [typeof runs[0], typeof runs[0], typeof runs[0]];
    const cpuPerBatch = (r: typeof one) => ((r.cpu * 1000) / r.batches).toFixed(1);
    rows.push([String(run), model.name, String(model.rows), single.rate.toFixed(1), one.rate.toFixed(1), two.rate.toFixed(1), (one.rate / single.rate).toFixed(2), (two.rate / one.rate).toFixed(2), cpuPerBatch(one), cpuPerBatch(two)]);
  }
}

console.log(`CPU: ${cpus()[0]?.model} x ${cpus().length}; batch ${BATCH}, batch-mode mask Fisher, every engine --threads 1, examples/s from first to last folded batch (the job's checkpoint times)`);
console.log('| run | model | rows | single process | coordinator + 1 worker | coordinator + 2 workers | 1 worker / single | 2 workers / 1 worker | coordinator CPU ms/batch (1 worker) | (2 workers) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);

// Redis memory with a 100k-batch backlog: batch size 1, so every row is a batch.
const backlogRows = Number(args.backlog);
const maxPending = Number(args['max-pending']);
const watch = backlog('backlog', backlogRows);
const before = Number((await redis.client.info('memory')).match(/used_memory:(\d+)/)![1]);
const file = config('memory', models[0]!.dir, watch, { fisher: { mode: 'batch', batch_size: 1 }, queue: { url: redis.socket, prefix: 'memory', max_pending: maxPending } });
const job = start(['stream', file]);
while ((await redis.client.hget('memory:job', 'run')) === null) await pause(20);
const worker = start(['worker', file]);
let peak = 0;
let peakEntries = 0;
for (const until = performance.now() + Number(args['memory-seconds']) * 1000; performance.now() < until; await pause(100)) {
  peak = Math.max(peak, Number((await redis.client.info('memory')).match(/used_memory:(\d+)/)![1]));
  peakEntries = Math.max(peakEntries, await redis.client.xlen('memory:{sst2}:batches'));
}
const folded = (await readStreamState(path.join(work, 'memory', 'state', 'checkpoint.json')).catch(() => undefined))?.tasks.sst2?.stats.examples ?? 0;
job.kill('SIGTERM');
worker.kill('SIGTERM');
await Promise.all([exited(job), exited(worker)]);
console.log(`\nRedis memory, backlog of ${backlogRows} batches (batch size 1), max_pending ${maxPending}, 1 worker, ${args['memory-seconds']} s: `
  + `used_memory ${(before / 2 ** 20).toFixed(2)} MiB before, peak ${(peak / 2 ** 20).toFixed(2)} MiB; peak stream length ${peakEntries}; ${folded} batches folded meanwhile`);
await redis.stop();
