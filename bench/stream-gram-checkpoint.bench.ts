// What a stream job with regmean pays per batch, per checkpoint and per version on BERT-base: the
// Gram sums of one task (12 layers x (3 x 768^2 + 3072^2) + 768^2 = 135M float64, 1.08 GB) folded
// (each contribution checked finite, then added in place), written beside checkpoint.json (every
// byte before the loop goes on; fsync and sha256 off it), read back and verified at a restart, and
// hashed for a manifest's fisher_fingerprint (on the loop).
//   npx tsx bench/stream-gram-checkpoint.bench.ts [--dir DIR]   (DIR on the disk the job's out/ would use)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { ModelBatch } from '@fisher-merge/data';
import { emptyGramStats, firstNonfiniteOf, type GramContribution } from '@fisher-merge/fisher';
import { CheckpointWriter, fisherFingerprint, foldTaskItem, outLayout, readStreamState, type StreamGrams, type TaskProgress } from '@fisher-merge/stream-job';

const { values: args } = parseArgs({ options: { dir: { type: 'string', default: tmpdir() } } });
const H = 768;
const I = 3072;
const inputs = [
  ...Array.from({ length: 12 }, (_, l) => [
    { name: `encoder.layer.${l}.attention.self.query`, dim: H },
    { name: `encoder.layer.${l}.attention.output.dense`, dim: H },
    { name: `encoder.layer.${l}.intermediate.dense`, dim: H },
    { name: `encoder.layer.${l}.output.dense`, dim: I },
  ]).flat(),
  { name: 'pooler.dense', dim: H },
];
const empty = emptyGramStats(inputs, { task: 'sst2', modelFingerprint: 'f'.repeat(64) });
// A valid Gram sum (the reader checks it): identity-like, so diagonal >= |off-diagonal|.
for (const [, g] of empty.grams) {
  const dim = Math.round(Math.sqrt(g.sum.length));
  for (let i = 0; i < dim; i++) g.sum[i * dim + i] = 1 + i;
  g.count = 1000;
}
const stats: StreamGrams = { ...empty, examples: 32, batches: 1, dataFingerprint: '1'.repeat(64) };
const values = inputs.reduce((n, i) => n + i.dim * i.dim, 0);

// One batch's contribution of the same size, folded into the sums: the finiteness check, then the add.
const contribution: GramContribution = { grams: new Map([...empty.grams].map(([name, g]) => [name, { sum: g.sum.slice(), count: 100 }])), examples: 32, dataFingerprint: '1'.repeat(64) };
const rows = 32;
const batch: ModelBatch = {
  tokens: { batchSize: rows, seqLen: 1, inputIds: new Int32Array(rows), attentionMask: new Int32Array(rows), tokenTypeIds: new Int32Array(rows) },
  completedSources: [],
  spans: [{ file: 'part-0.parquet', row: 0, rows }],
};
const progress: TaskProgress = { task: 'sst2', state: { stats, cursor: { consumed: new Set() }, quarantined: 0, skippedRows: 0 }, folded: 0, buffered: rows, event: { kind: 'start' } };
// The second of two folds: the sums' pages are touched and the loops compiled, as in a running job.
const folds = [0, 1].map(() => {
  const foldStart = performance.now();
  foldTaskItem(undefined)(progress, { batch, contribution });
  return (performance.now() - foldStart) / 1000;
});
const fold = folds[1]!;
const checkStart = performance.now();
firstNonfiniteOf([...contribution.grams].map(([name, g]) => [name, g.sum] as const));
const check = (performance.now() - checkStart) / 1000;

const out = mkdtempSync(path.join(args.dir, 'fisher-merge-bench-gram-'));
try {
  const state = { tasks: { sst2: { stats, cursor: { consumed: new Set<string>() }, quarantined: 0, skippedRows: 0 } } };
  const writer = await CheckpointWriter.open(out, undefined);
  const started = performance.now();
  const written = writer.write(state);
  // write() is synchronous up to its first await: the Gram file is written and fsynced by then.
  const blocking = (performance.now() - started) / 1000;
  await written;
  const total = (performance.now() - started) / 1000;

  const readStart = performance.now();
  await readStreamState(outLayout(out).checkpoint);
  const read = (performance.now() - readStart) / 1000;

  const hashStart = performance.now();
  fisherFingerprint(stats);
  const hash = (performance.now() - hashStart) / 1000;

  console.log(JSON.stringify({
    gram_values: values,
    gram_file_gb: Number(((values * 8) / 1e9).toFixed(3)),
    fold_one_batch_s: Number(fold.toFixed(2)),
    of_which_finiteness_check_s: Number(check.toFixed(2)),
    checkpoint_loop_blocked_s: Number(blocking.toFixed(2)),
    checkpoint_total_s: Number(total.toFixed(2)),
    restart_read_and_verify_s: Number(read.toFixed(2)),
    version_fingerprint_s: Number(hash.toFixed(2)),
  }));
} finally {
  rmSync(out, { recursive: true, force: true });
}
