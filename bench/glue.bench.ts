// Whole-process time of the CLI against a PyTorch script (bench/glue_torch.py) on real GLUE rows: a
// random-weight BERT-base checkpoint (the same file for both peers), the first 256 validation rows of
// SST-2 (short single sentences, much padding) and RTE (long pairs, less), batches of 32. Passes: mask
// Fisher in batch mode (the paper's) and example mode, and forward evaluation. The rows are tokenized
// once here and handed to the peer as padded batches, so both see identical ids. Runs are interleaved
// and each is timed as a whole process (start-up, loading, tokenizing and writing included); best of
// --reps. torch is timed only when it runs OpenBLAS with the CPU's fastest kernels (bench/torch-peer.ts).
// Also prints effective GFLOP/s on the real tokens next to an fp32 MatMul peak measured
// through onnxruntime on the same machine.
//   npx tsx bench/glue.bench.ts [--tasks sst2,rte] [--rows 256] [--batch 32] [--reps 2] [--no-torch]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import type { TokenBatch } from '@fisher-merge/core';
import { DEFAULT_MAX_LENGTH, glueTask, loadTokenizer } from '@fisher-merge/data';
import { Graph } from '@fisher-merge/engine-onnx';
import { tokenizeEvalSplit } from '@fisher-merge/eval/evaluate';
import type { EncoderConfig } from '@fisher-merge/model';
import { writeRandomCheckpoint } from './random-checkpoint.ts';
import { checkTorchPeer } from './torch-peer.ts';

const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: 'sst2,rte' },
    rows: { type: 'string', default: '256' },
    batch: { type: 'string', default: '32' },
    reps: { type: 'string', default: '2' },
    'no-torch': { type: 'boolean', default: false },
  },
});
const rows = Number(args.rows), batchSize = Number(args.batch), reps = Number(args.reps);
const tasks = args.tasks.split(',');
const threads = availableParallelism();
const BASE = { numLayers: 12, hiddenSize: 768, numHeads: 12, intermediateSize: 3072 };
const peer = args['no-torch'] ? undefined : checkTorchPeer(threads);
const python = peer?.verdict.valid ? peer.python : undefined;

const work = mkdtempSync(path.join(tmpdir(), 'fisher-merge-glue-bench-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

/** Nominal FLOPs of one forward over the real tokens: every dense layer per token plus attention. */
function forwardFlops(c: EncoderConfig, lengths: number[]): number {
  const { hiddenSize: D, intermediateSize: I, numLayers: L } = c;
  return lengths.reduce((s, n) => s + L * (2 * n * (4 * D * D + 2 * D * I) + 4 * n * n * D), 0);
}

/** fp32 MatMul GFLOP/s through onnxruntime (all cores, best of 5 runs): the machine's practical limit. */
async function matmulPeak(): Promise<number> {
  const M = 2048, K = 768, N = 3072;
  const g = new Graph();
  const x = g.input('x', 'float', [M, K]);
  g.output('y', g.op('MatMul', [x, g.weight('w', Float32Array.from({ length: K * N }, (_, i) => ((i % 7) - 3) / 8), [K, N])]), 'float', [M, N]);
  const weights = Object.fromEntries([...g.weights].map(([name, { data, dims }]) => [name, new ort.Tensor('float32', data, dims)]));
  const session = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: threads, interOpNumThreads: 1 });
  const feeds = { ...weights, x: new ort.Tensor('float32', Float32Array.from({ length: M * K }, (_, i) => ((i % 5) - 2) / 4), [M, K]) };
  let best = Infinity;
  for (let r = 0; r < 6; r++) {
    const t0 = performance.now();
    await session.run(feeds);
    if (r > 0) best = Math.min(best, performance.now() - t0);
  }
  await session.release();
  return (2 * M * K * N) / (best / 1000) / 1e9;
}

interface Job {
  task: string;
  name: string;
  peer: 'onnx' | 'torch';
  command: string[];
  /** Nominal FLOPs of the pass on real tokens. */
  flops: number;
  best: number;
  /** In-process seconds of the pass (the CLI's fisher event, the peer's own line), best run. */
  inner: number;
}

function timeJob(job: Job): void {
  const t0 = performance.now();
  // The peer's environment (OpenBLAS core type) is for the torch command only.
  const env = job.peer === 'torch' ? peer!.env : { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' };
  const run = spawnSync(job.command[0], job.command.slice(1), { encoding: 'utf8', env, maxBuffer: 1 << 26 });
  const seconds = (performance.now() - t0) / 1000;
  if (run.status !== 0) throw new Error(`${job.command.join(' ')} failed:\n${run.stderr.trim().split('\n').slice(-3).join('\n')}`);
  job.best = Math.min(job.best, seconds);
  // The CLI logs JSON lines on stderr off a TTY; the peer prints one on stdout.
  const inner = [...run.stdout.split('\n'), ...run.stderr.split('\n')]
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { event?: string; seconds?: number })
    .find((e) => (e.event === 'fisher.written' || e.event === undefined) && typeof e.seconds === 'number');
  if (inner?.seconds !== undefined) job.inner = Math.min(job.inner, inner.seconds);
  console.error(JSON.stringify({ event: 'bench.run', task: job.task, pass: job.name, peer: job.peer, seconds: Number(seconds.toFixed(2)) }));
}

// The CLI runs dist/: build it from the current sources first.
if (spawnSync('node', ['scripts/build.mjs'], { stdio: 'inherit' }).status !== 0) throw new Error('node scripts/build.mjs failed');
const model = path.join(work, 'bert-base');
await import('node:fs/promises').then((fs) => fs.mkdir(model));
const config = await writeRandomCheckpoint(model, BASE);
const tokenizer = await loadTokenizer(model);
const cli = ['node', 'bin/fisher-merge.mjs'];
const jobs: Job[] = [];
const padding: string[] = [];
for (const task of tasks) {
  const data = `data/glue/${task}/validation-00000-of-00001.parquet`;
  const batches: TokenBatch[] = await tokenizeEvalSplit({ data, task: glueTask(task), limit: rows, batchSize, maxLength: DEFAULT_MAX_LENGTH }, tokenizer, config.padTokenId);
  const lengths = batches.flatMap((b) => Array.from({ length: b.batchSize }, (_, r) => b.attentionMask.subarray(r * b.seqLen, (r + 1) * b.seqLen).reduce((s, v) => s + v, 0)));
  const real = lengths.reduce((s, n) => s + n, 0);
  const positions = batches.reduce((s, b) => s + b.batchSize * b.seqLen, 0);
  padding.push(`${task}: ${lengths.length} rows, ${real} real tokens, ${positions} padded positions (${(positions / real).toFixed(2)}x)`);
  const file = path.join(work, `${task}.json`);
  const rowsOf = (a: Int32Array | Float32Array, b: TokenBatch) => Array.from({ length: b.batchSize }, (_, r) => Array.from(a.subarray(r * b.seqLen, (r + 1) * b.seqLen)));
  writeFileSync(file, JSON.stringify(batches.map((b) => ({ input_ids: rowsOf(b.inputIds, b), attention_mask: rowsOf(b.attentionMask, b), token_type_ids: rowsOf(b.tokenTypeIds, b), labels: Array.from(b.labels!, Math.round) }))));
  const fwd = forwardFlops(config, lengths);
  const common = ['--model', model, '--data', data, '--task', task];
  const fisher = (mode: string) => [...cli, 'fisher', ...common, '--samples', String(rows), '--batch-size', String(batchSize), '--mode', mode, '--out', path.join(work, `${task}-${mode}.safetensors`), '--overwrite'];
  const job = (name: string, peer: Job['peer'], command: string[], flops: number): Job => ({ task, name, peer, command, flops, best: Infinity, inner: Infinity });
  jobs.push(job('mask Fisher, batch mode', 'onnx', fisher('batch'), 2 * fwd));
  jobs.push(job('mask Fisher, example mode', 'onnx', fisher('example'), 2 * fwd));
  jobs.push(job('forward (eval)', 'onnx', [...cli, 'eval', ...common, '--limit', String(rows), '--batch-size', String(batchSize)], fwd));
  if (python) {
    const peer = (pass: string) => [python, 'bench/glue_torch.py', '--model', model, '--batches', file, '--pass', pass, '--threads', String(threads)];
    jobs.push(job('mask Fisher, batch mode', 'torch', peer('mask'), 2 * fwd));
    jobs.push(job('forward (eval)', 'torch', peer('forward'), fwd));
  }
}

// The peak is measured once per round of runs and the best kept, as the runs are.
let peak = 0;
for (let r = 0; r < reps; r++) {
  peak = Math.max(peak, await matmulPeak());
  for (const j of jobs) timeJob(j);
}

const find = (task: string, name: string, peer: Job['peer']) => jobs.find((j) => j.task === task && j.name === name && j.peer === peer);
const gflops = (flops: number, s: number) => (Number.isFinite(s) ? (flops / s / 1e9).toFixed(1) : '-');
console.log(`BERT-base (random weights), first ${rows} validation rows, batch ${batchSize}, ${threads} threads (${cpus()[0]?.model ?? 'unknown CPU'}), whole-process seconds, best of ${reps}, runs interleaved`);
console.log(`torch peer: ${args['no-torch'] ? 'not run (--no-torch)' : peer ? `${peer.python} bench/glue_torch.py: ${peer.verdict.line}` : 'not run (torch does not import)'}`);
for (const p of padding) console.log(p);
console.log(`fp32 MatMul peak through onnxruntime (best of one measurement per round): ${peak.toFixed(1)} GFLOP/s${peer?.probe ? `; the torch peer's fp32 GEMM: ${peer.probe.gemm_gflops.toFixed(1)} GFLOP/s` : ''}; effective GFLOP/s count the nominal FLOPs on real tokens (forward: dense layers + attention per token; mask pass: 2x forward)`);
console.log('| task | pass | onnx s | torch s | torch/onnx | onnx GFLOP/s (whole process / in-process) | torch GFLOP/s (whole / in-process) |');
console.log('|---|---|---|---|---|---|---|');
const rate = (x: Job) => `${gflops(x.flops, x.best)} / ${gflops(x.flops, x.inner)}`;
for (const j of jobs.filter((x) => x.peer === 'onnx')) {
  const t = find(j.task, j.name, 'torch');
  console.log(`| ${j.task} | ${j.name} | ${j.best.toFixed(1)} | ${t ? t.best.toFixed(1) : '-'} | ${t ? (t.best / j.best).toFixed(2) : '-'} | ${rate(j)} | ${t ? rate(t) : '-'} |`);
}
for (const task of tasks) {
  const [batch, example] = ['mask Fisher, batch mode', 'mask Fisher, example mode'].map((n) => find(task, n, 'onnx')!);
  console.log(`${task}: onnx example mode / batch mode time: ${(example.best / batch.best).toFixed(2)}`);
}
