// RegMean's cost on BERT-base (random weights, bench/random-checkpoint.ts): time and peak memory
// (/usr/bin/time -v) of its Gram statistics against the paper's mask-node Fisher on the same SST-2
// rows, and of the regmean merge of two such models; plus why the onnx graph computes the Grams
// itself (float64 Gemm) rather than returning the layer inputs for the host to multiply.
//   npx tsx bench/regmean.bench.ts [--examples 256] [--threads N] [--merge: also the regmean merge of two
//   BERT-base models, whose float64 solves run in JavaScript: about 550 G multiply-adds, tens of minutes]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { mergeEncoders, resolveRule, type GramOfSlot, type TensorSlot } from '@fisher-merge/merge';
import { writeRandomCheckpoint } from './random-checkpoint.ts';

const { values: args } = parseArgs({ options: { examples: { type: 'string', default: '256' }, threads: { type: 'string' }, merge: { type: 'boolean', default: false }, 'solve-layer': { type: 'boolean', default: false } } });
const REPO = path.resolve(import.meta.dirname, '..');
const BERT_BASE = { numLayers: 12, hiddenSize: 768, numHeads: 12, intermediateSize: 3072 };
const work = path.join(tmpdir(), 'fisher-merge-bench-regmean');
const data = path.join(REPO, 'data/glue/sst2/train-00000-of-00001.parquet');
const threads = args.threads ? ['--threads', args.threads] : [];

/** Wall seconds and peak resident memory of one CLI run, from GNU time. */
function timed(label: string, cliArgs: string[]): { label: string; seconds: number; peakGiB: number } {
  const run = spawnSync('/usr/bin/time', ['-v', process.execPath, path.join(REPO, 'bin/fisher-merge.mjs'), ...cliArgs], { cwd: REPO, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  if (run.status !== 0) throw new Error(`${label} failed: ${run.stderr.split('\n').filter((l) => l.includes('error')).join(' ').slice(0, 500)}`);
  const field = (name: string) => run.stderr.split('\n').find((l) => l.includes(name))?.split(': ').pop() ?? '';
  // [[h:]m:]s, read from the seconds end.
  const [s, m, h] = field('Elapsed (wall clock) time').split(':').map(Number).reverse().concat([0, 0]) as [number, number, number];
  return { label, seconds: s + m * 60 + h * 3600, peakGiB: Number(field('Maximum resident set size')) / 2 ** 20 };
}

/** Host float64 x^T x of one [rows, width] input (the alternative to the in-graph Gemm), GFLOP/s. */
function hostGramRate(rows: number, width: number): number {
  const x = Float32Array.from({ length: rows * width }, (_, i) => Math.sin(i));
  const gram = new Float64Array(width * width);
  const start = performance.now();
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * width, (r + 1) * width);
    for (let i = 0; i < width; i++) {
      const xi = row[i]!;
      for (let j = i; j < width; j++) gram[i * width + j]! += xi * row[j]!;
    }
  }
  return (rows * width * (width + 1)) / ((performance.now() - start) / 1000) / 1e9;
}

/**
 * Seconds of the regmean rule on one BERT-base layer's six merged weights (query, key, value,
 * attention output, FFN in, FFN out) of two models, with positive definite Grams: the merge's
 * float64 solves, which a whole model repeats 12 times (plus the pooler).
 */
function solveOneLayer(): number {
  const D = BERT_BASE.hiddenSize, I = BERT_BASE.intermediateSize;
  const slot = (role: TensorSlot['role'], out: number, inF: number): TensorSlot => ({ name: `layer.0.${role}.weight`, role, layer: 0, param: 'weight', shape: [out, inF] });
  const slots = [slot('query', D, D), slot('key', D, D), slot('value', D, D), slot('attnOut', D, D), slot('ffnIn', I, D), slot('ffnOut', D, I)];
  const gram = (seed: number): GramOfSlot => {
    const byWidth = new Map<number, Float64Array>();
    return (s) => {
      const dim = s.shape[1]!;
      // Symmetric and diagonally dominant, so positive definite: dim + 1 on the diagonal, |entries| <= 0.5 elsewhere.
      if (!byWidth.has(dim)) byWidth.set(dim, Float64Array.from({ length: dim * dim }, (_, k) => (k % (dim + 1) === 0 ? dim + 1 : Math.sin(seed * (Math.floor(k / dim) + (k % dim) + 1)) / 2)));
      return { input: `0.${s.role === 'key' || s.role === 'value' ? 'query' : s.role}`, sum: byWidth.get(dim)!, count: 1 };
    };
  };
  const weights = (seed: number, s: TensorSlot) => Float32Array.from({ length: s.shape[0]! * s.shape[1]! }, (_, k) => Math.sin(seed + k));
  const start = performance.now();
  mergeEncoders({ slots, models: 2, rule: resolveRule('regmean'), tensor: (j, s) => weights(j + 1, s), stats: { gram: [gram(1), gram(2)] } });
  return (performance.now() - start) / 1000;
}

const models = ['a', 'b'].map((name) => path.join(work, `bert-base-${name}`));
mkdirSync(work, { recursive: true });
for (const [k, dir] of models.entries()) if (!existsSync(path.join(dir, 'model.safetensors'))) await writeRandomCheckpoint(dir, BERT_BASE, k === 0 ? 'data/models/sst2' : 'data/models/cola');

// Re-runs replace their outputs.
const rows = ['--samples', args.examples, '--batch-size', '32', '--overwrite', ...threads];
const common = (model: string) => ['--model', model, '--data', data, '--task', 'sst2', ...rows];
console.log(`BERT-base (random weights), first ${args.examples} SST-2 training rows, batches of 32, onnx engine${args.threads ? `, ${args.threads} threads` : ''}`);
console.log('| run | wall s | ms per example | peak RSS GiB |');
console.log('|---|---|---|---|');
const row = (r: ReturnType<typeof timed>, perExample = true) => {
  console.log(`| ${r.label} | ${r.seconds.toFixed(1)} | ${perExample ? ((r.seconds * 1000) / Number(args.examples)).toFixed(0) : '-'} | ${r.peakGiB.toFixed(2)} |`);
  return r;
};
const mask = row(timed('mask Fisher (batch mode)', ['fisher', ...common(models[0]!), '--out', path.join(work, 'a.mask.safetensors')]));
const gram = row(timed('Gram statistics (fisher --kind gram)', ['fisher', '--kind', 'gram', ...common(models[0]!), '--out', path.join(work, 'a.gram.safetensors')]));
if (args.merge) {
  row(timed('Gram statistics, second model', ['fisher', '--kind', 'gram', ...common(models[1]!), '--out', path.join(work, 'b.gram.safetensors')]));
  // 256 [CLS] rows cannot span the pooler's 768 dimensions: a ridge makes its sum solvable.
  const out = path.join(work, `merged-${process.pid}`);
  row(timed('regmean merge of two models (ridge 1e-6)', ['merge', '--method', 'regmean', '--param', 'ridge=1e-6', '--model', models[0]!, '--fisher', path.join(work, 'a.gram.safetensors'), '--model', models[1]!, '--fisher', path.join(work, 'b.gram.safetensors'), '--out', out]), false);
  spawnSync('rm', ['-rf', out]);
}
if (args['solve-layer']) console.log(`\nregmean float64 solves of one BERT-base layer (6 weights, 2 models), in process: ${solveOneLayer().toFixed(1)} s`);
console.log(`\nGram / mask Fisher time: ${(gram.seconds / mask.seconds).toFixed(2)}x`);
console.log(`host float64 x^T x in JavaScript (the layer-inputs alternative), one [200, 3072] FFN-output input: ${hostGramRate(200, 3072).toFixed(2)} GFLOP/s`);
