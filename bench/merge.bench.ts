// Streaming merge memory: four random BERT-large-sized checkpoints (about 1.3 GB each, written into a
// temporary directory and deleted after), merged by mask-fisher through the CLI; peak RSS of the
// merge process from /usr/bin/time -f %M. Models: BENCH_MERGE_MODELS (default 4).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SafetensorsWriter, type TensorInfo } from '@fisher-merge/checkpoint';
import { writeMaskFisher, EMPTY_DATA_FINGERPRINT } from '@fisher-merge/fisher';
import { describeModel, modelFingerprint } from '@fisher-merge/model';

const REPO = path.resolve(import.meta.dirname, '..');
const LARGE = { hidden_size: 1024, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 4096, vocab_size: 30522, max_position_embeddings: 512 };

/** BERT-large tensors under Hugging Face's names (BertForSequenceClassification, 2 labels). */
function bertLargeLayout(): Record<string, TensorInfo> {
  const { hidden_size: H, intermediate_size: I, vocab_size: V, max_position_embeddings: P } = LARGE;
  const shapes: Record<string, number[]> = {
    'bert.embeddings.word_embeddings.weight': [V, H],
    'bert.embeddings.position_embeddings.weight': [P, H],
    'bert.embeddings.token_type_embeddings.weight': [2, H],
    'bert.embeddings.LayerNorm.weight': [H],
    'bert.embeddings.LayerNorm.bias': [H],
    'bert.pooler.dense.weight': [H, H],
    'bert.pooler.dense.bias': [H],
    'classifier.weight': [2, H],
    'classifier.bias': [2],
  };
  for (let l = 0; l < LARGE.num_hidden_layers; l++) {
    const m = `bert.encoder.layer.${l}`;
    for (const linear of ['attention.self.query', 'attention.self.key', 'attention.self.value', 'attention.output.dense']) {
      shapes[`${m}.${linear}.weight`] = [H, H];
      shapes[`${m}.${linear}.bias`] = [H];
    }
    shapes[`${m}.intermediate.dense.weight`] = [I, H];
    shapes[`${m}.intermediate.dense.bias`] = [I];
    shapes[`${m}.output.dense.weight`] = [H, I];
    shapes[`${m}.output.dense.bias`] = [H];
    for (const norm of ['attention.output.LayerNorm', 'output.LayerNorm']) {
      shapes[`${m}.${norm}.weight`] = [H];
      shapes[`${m}.${norm}.bias`] = [H];
    }
  }
  return Object.fromEntries(Object.entries(shapes).map(([name, shape]) => [name, { dtype: 'F32', shape }]));
}

/** xorshift32 uniform values in [-0.05, 0.05): cheap enough to fill 1.3 GB per model. */
function randomFill(out: Float32Array, seed: number): number {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 4294967296 - 0.5) * 0.1;
  }
  return s;
}

/** A model folder written tensor by tensor (the streaming writer), so generating it needs no 1.3 GB buffer. */
function writeRandomModel(dir: string, seed: number): void {
  cpSync(path.join(REPO, 'data/models/sst2'), dir, { recursive: true });
  const config = { ...JSON.parse(readFileSync(path.join(REPO, 'data/models/sst2/config.json'), 'utf8')), ...LARGE };
  writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  const layout = bertLargeLayout();
  const writer = SafetensorsWriter.create(path.join(dir, 'model.safetensors'), layout);
  let state = seed;
  for (const name of writer.names) {
    const data = new Float32Array(layout[name]!.shape.reduce((a, b) => a * b, 1));
    state = randomFill(data, state);
    writer.write(name, { dtype: 'F32', shape: layout[name]!.shape, data });
  }
  writer.close();
}

async function writeRandomFisher(file: string, modelDir: string, seed: number): Promise<void> {
  const { num_hidden_layers: L, num_attention_heads: H, intermediate_size: I } = LARGE;
  const head = new Float32Array(L * H);
  const neuron = new Float32Array(L * I);
  randomFill(neuron, randomFill(head, seed));
  await writeMaskFisher(file, {
    mode: 'batch', batchSize: 32, numLayers: L, numHeads: H, intermediateSize: I,
    head: Float64Array.from(head, Math.abs), neuron: Float64Array.from(neuron, Math.abs),
    examples: 1024, batches: 32, task: 'sst2', modelFingerprint: await modelFingerprint(await describeModel(modelDir)), dataFingerprint: EMPTY_DATA_FINGERPRINT,
  });
}

const count = Number(process.env.BENCH_MERGE_MODELS ?? 4);
const dir = mkdtempSync(path.join(tmpdir(), 'fisher-merge-merge-bench-'));
try {
  const t0 = performance.now();
  const args: string[] = [];
  for (let j = 0; j < count; j++) {
    const model = path.join(dir, `model${j}`);
    writeRandomModel(model, 1000 + j);
    await writeRandomFisher(path.join(dir, `model${j}.mask.safetensors`), model, 2000 + j);
    args.push('--model', model, '--fisher', path.join(dir, `model${j}.mask.safetensors`));
  }
  const size = statSync(path.join(dir, 'model0', 'model.safetensors')).size;
  console.log(`generated ${count} random BERT-large checkpoints (L24 H1024 I4096, ${(size / 1e9).toFixed(2)} GB each) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const out = path.join(dir, 'merged');
  const started = performance.now();
  const run = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, path.join(REPO, 'bin/fisher-merge.mjs'), 'merge', ...args, '--method', 'mask-fisher', '--out', out], { encoding: 'utf8', cwd: REPO });
  const seconds = (performance.now() - started) / 1000;
  if (run.status !== 0) throw new Error(`merge failed: ${run.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const peakKiB = Number(run.stderr.trim().split('\n').at(-1));
  const written = readdirSync(out).filter((f) => f !== 'merge.json').reduce((sum, f) => sum + statSync(path.join(out, f, 'model.safetensors')).size, 0);
  console.log('\n| merge | inputs | written | seconds | peak RSS (/usr/bin/time %M) |');
  console.log('|---|---|---|---|---|');
  console.log(`| mask-fisher, ${count} x BERT-large | ${((count * size) / 1e9).toFixed(1)} GB | ${(written / 1e9).toFixed(1)} GB | ${seconds.toFixed(1)} | ${(peakKiB / 1024).toFixed(0)} MB |`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
