// Engine throughput (examples/s) on random-weight BERT configs at sequence length 128: forward and
// per-example mask gradients for onnxruntime, full Fisher batched vs the classic batch-1 loop on tiny,
// and the PyTorch peer (bench/engines_torch.py) in the same run when torch imports and runs OpenBLAS
// with the CPU's fastest kernels (bench/torch-peer.ts; its GEMM GFLOP/s is printed above the table).
//   npx tsx bench/engines.bench.ts [--configs tiny,small,base] [--reps 3] [--threads N] [--opt all] [--no-torch]
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import type { TokenBatch } from '@fisher-merge/core';
import { createOnnxEngine, type OnnxEngineOptions } from '@fisher-merge/engine-onnx';
import { classicParameterFisher } from '@fisher-merge/fisher';
import { bertConfig, randomWeights, rng } from '../test/engine-onnx/random.ts';
import { checkTorchPeer } from './torch-peer.ts';

const CONFIGS = {
  tiny: { numLayers: 2, hiddenSize: 128, numHeads: 2, intermediateSize: 512, batch: 16 },
  small: { numLayers: 4, hiddenSize: 512, numHeads: 8, intermediateSize: 2048, batch: 16 },
  base: { numLayers: 12, hiddenSize: 768, numHeads: 12, intermediateSize: 3072, batch: 8 },
} as const;
type ConfigName = keyof typeof CONFIGS;
const SEQ = 128;

const { values: args } = parseArgs({
  options: {
    configs: { type: 'string', default: 'tiny,small,base' },
    reps: { type: 'string', default: '3' },
    threads: { type: 'string', default: String(availableParallelism()) },
    opt: { type: 'string', default: 'all' },
    'no-torch': { type: 'boolean', default: false },
  },
});
const reps = Number(args.reps);
const threads = Number(args.threads);
const names = args.configs.split(',') as ConfigName[];

/**
 * Examples/s of the fastest of `reps` runs after one warm-up run (which also builds the session): the
 * machine is shared, and the best run is the least disturbed one. The torch peer measures the same way.
 */
async function rate(examples: number, fn: () => Promise<unknown>): Promise<number> {
  await fn();
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await fn();
    best = Math.min(best, performance.now() - t0);
  }
  return (examples * 1000) / best;
}

function randomBatch(B: number, seed: number): TokenBatch {
  const r = rng(seed);
  return {
    batchSize: B,
    seqLen: SEQ,
    inputIds: Int32Array.from({ length: B * SEQ }, () => 1 + Math.floor(((r() + 1) / 2) * 30000)),
    attentionMask: new Int32Array(B * SEQ).fill(1),
    tokenTypeIds: new Int32Array(B * SEQ),
    labels: Float32Array.from({ length: B }, () => (r() > 0 ? 1 : 0)),
  };
}

const peer = args['no-torch'] ? undefined : checkTorchPeer(threads);

/** The PyTorch peer's rates, or undefined when torch does not import or its BLAS voids the comparison. */
function torchPeer(config: ConfigName): Record<string, number> | undefined {
  if (!peer?.verdict.valid) return undefined;
  const run = spawnSync(peer.python, ['bench/engines_torch.py', '--configs', config, '--reps', String(reps), '--threads', String(threads)], { env: peer.env, encoding: 'utf8' });
  if (run.status !== 0) {
    console.log(`torch peer failed: ${run.stderr.trim().split('\n').pop()}`);
    return undefined;
  }
  return JSON.parse(run.stdout.trim().split('\n').pop()!);
}

const fmt = (v: number | undefined) => (v === undefined ? '-' : v >= 100 ? v.toFixed(0) : v.toPrecision(3));
const ratio = (a: number | undefined, b: number | undefined) => (a && b ? (a / b).toFixed(2) : '-');

console.log(`seq ${SEQ}, ${threads} threads, ORT optimisation '${args.opt}', best of ${reps} runs; examples/s (higher is better)`);
console.log(`torch peer: ${args['no-torch'] ? 'not run (--no-torch)' : (peer?.verdict.line ?? 'not run (torch does not import)')}`);
console.log('| config | onnx fwd | onnx mask-grad | torch fwd | torch mask-grad | onnx/torch fwd | onnx/torch mask-grad | mask-grad cost (x fwd) |');
console.log('|---|---|---|---|---|---|---|---|');
const fisherRows: string[] = [];
for (const name of names) {
  const { batch: B, ...shape } = CONFIGS[name];
  const weights = randomWeights(bertConfig(shape), 7, undefined, 0.02);
  const engine = await createOnnxEngine(weights, { threads, optimization: args.opt as OnnxEngineOptions['optimization'] });
  const batch = randomBatch(B, 11);
  const fwd = await rate(B, () => engine.forward(batch));
  const mask = await rate(B, () => engine.maskGradients(batch));
  if (name === 'tiny') {
    const batched = await rate(B, () => engine.parameterFisher(batch, 'empirical'));
    const loop = await rate(B, () => classicParameterFisher(engine, batch, 'empirical'));
    fisherRows.push(`| ${name} | ${fmt(batched)} | ${fmt(loop)} | ${ratio(batched, loop)} |`);
  }
  await engine.dispose();
  const torch = torchPeer(name);
  if (torch?.fisher_loop) fisherRows.push(`| ${name} (torch batch-1 loop) | - | ${fmt(torch.fisher_loop)} | - |`);
  console.log(`| ${name} (B${B}) | ${fmt(fwd)} | ${fmt(mask)} | ${fmt(torch?.fwd)} | ${fmt(torch?.mask)} | ${ratio(fwd, torch?.fwd)} | ${ratio(mask, torch?.mask)} | ${(fwd / mask).toFixed(2)} |`);
}
if (fisherRows.length) {
  console.log('\nFull empirical Fisher, examples/s');
  console.log('| config | onnx batched | classic batch-1 loop | batched/loop |');
  console.log('|---|---|---|---|');
  for (const row of fisherRows) console.log(row);
}
