import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { lastValueFrom, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensors, fromFloat32, readSafetensors, writeSafetensors } from '@fisher-merge/checkpoint';
import { addStats, readMaskFisher, writeMaskFisher, type MaskFisher } from '@fisher-merge/fisher';
import { glueTask, parquetSource, writeRowsParquet } from '@fisher-merge/data';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { mergeModels } from '@fisher-merge/merge-writer';
import { describeModel, modelFingerprint } from '@fisher-merge/model';
import { tinyBert, writeModel } from '../model/tiny.ts';
import { errorLine, tempDir } from '../support.ts';

const root = path.resolve(import.meta.dirname, '../..');
const model = (t: string) => path.join(root, 'data/models', t);
const train = (t: string) => path.join(root, 'data/glue', t, 'train-00000-of-00001.parquet');
const sst2 = glueTask('sst2');
let dir: string;
const fisherFile = (t: string) => path.join(dir, `${t}.mask.safetensors`);

function cli(...args: string[]) {
  const run = spawnSync(process.execPath, [path.join(root, 'bin/fisher-merge.mjs'), ...args], { encoding: 'utf8', cwd: root });
  return { status: run.status, stderr: run.stderr.trim(), stdout: run.stdout };
}

beforeAll(async () => {
  dir = tempDir('fisher-merge-jobs-');
  for (const t of ['sst2', 'cola']) {
    const { stats } = await computeMaskFisher({ modelDir: model(t), data: train(t), task: glueTask(t), samples: 32, batchSize: 16, mode: 'batch', engine: 'onnx' });
    await writeMaskFisher(fisherFile(t), stats);
  }
  // The first 128 sst2 training rows split into two Parquet files of 64.
  const rows = (await lastValueFrom(parquetSource(train('sst2'), { sample: { kind: 'first', n: 128 } }).pipe(toArray())))
    .flatMap(({ batch, selection }) => (selection ? Array.from(selection, (i) => batch.get(i)!) : batch.toArray()).map((r) => ({ sentence: String(r.sentence), label: Number(r.label) })));
  expect(rows).toHaveLength(128);
  mkdirSync(path.join(dir, 'halves'));
  const schema = { sentence: { type: 'UTF8' as const }, label: { type: 'INT64' as const } };
  await writeRowsParquet(path.join(dir, 'halves', 'a.parquet'), rows.slice(0, 64), schema);
  await writeRowsParquet(path.join(dir, 'halves', 'b.parquet'), rows.slice(64), schema);
}, 120_000);

/** Same bytes (a deep equality over millions of elements is far too slow). */
function expectBitEqual(a: Float32Array, b: Float32Array, label: string): void {
  expect(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), label).toBe(true);
}

function expectSameStats(a: MaskFisher, b: MaskFisher): void {
  for (const key of ['head', 'neuron'] as const) {
    const worst = a[key].reduce((w, v, i) => Math.max(w, Math.abs(v - b[key][i]!) / Math.abs(b[key][i]!)), 0);
    expect(worst, key).toBeLessThanOrEqual(1e-12);
  }
  expect(a.examples).toBe(b.examples);
  expect(a.batches).toBe(b.batches);
  expect(a.dataFingerprint).toBe(b.dataFingerprint);
}

describe('Fisher jobs', () => {
  it('accumulating over two halves and adding equals accumulating over all of it, in both modes', async () => {
    for (const mode of ['example', 'batch'] as const) {
      const run = (data: string) => computeMaskFisher({ modelDir: model('sst2'), data, task: sst2, batchSize: 32, mode, engine: 'onnx' }).then((r) => r.stats);
      const [a, b, whole] = await Promise.all([run(path.join(dir, 'halves', 'a.parquet')), run(path.join(dir, 'halves', 'b.parquet')), run(path.join(dir, 'halves'))]);
      expect([a.examples, b.examples, whole.examples]).toEqual([64, 64, 128]);
      expectSameStats(addStats(a, b), whole);
      if (mode === 'batch') {
        // The same through files and the CLI, as shards computed on separate workers would be combined.
        await writeMaskFisher(path.join(dir, 'a.mask.safetensors'), a);
        await writeMaskFisher(path.join(dir, 'b.mask.safetensors'), b);
        const run = cli('fisher-add', '--fisher', path.join(dir, 'a.mask.safetensors'), '--fisher', path.join(dir, 'b.mask.safetensors'), '--out', path.join(dir, 'ab.mask.safetensors'));
        expect(run.status, run.stderr).toBe(0);
        const sum = await readMaskFisher(path.join(dir, 'ab.mask.safetensors'));
        expect(sum.examples).toBe(128);
        expect(sum.dataFingerprint).toBe(whole.dataFingerprint);
        sum.neuron.forEach((v, i) => expect(Math.abs(v - whole.neuron[i]!) / whole.neuron[i]!).toBeLessThan(1e-6));
      }
    }
  });
});

describe('merge', () => {
  it('merging a model with itself returns its encoder unchanged', async () => {
    const out = path.join(dir, 'self');
    // The same folder twice would name two outputs alike: refused; a copy under another name is merged.
    await expect(mergeModels({ models: [model('sst2'), model('sst2')], fishers: [fisherFile('sst2'), fisherFile('sst2')], method: 'mask-fisher', out })).rejects.toThrow(/share the folder name 'sst2'/);
    const copy = path.join(dir, 'copy', 'sst2-again');
    cpSync(model('sst2'), copy, { recursive: true });
    await mergeModels({ models: [model('sst2'), copy], fishers: [fisherFile('sst2'), fisherFile('sst2')], method: 'mask-fisher', out });
    const original = readSafetensors(path.join(model('sst2'), 'model.safetensors'));
    const merged = readSafetensors(path.join(out, 'encoder', 'model.safetensors'));
    const task = readSafetensors(path.join(out, 'sst2', 'model.safetensors'));
    for (const name of merged.names()) expectBitEqual(merged.float32(name), original.float32(`bert.${name}`), name);
    for (const name of original.names()) expectBitEqual(task.float32(name), original.float32(name), name);
  });

  it("lambdas (1, 0) return the first model's encoder, and each model keeps its own classifier", async () => {
    const out = path.join(dir, 'lambda');
    await mergeModels({ models: [model('sst2'), model('cola')], fishers: [fisherFile('sst2'), fisherFile('cola')], method: 'mask-fisher', lambdas: [1, 0], out });
    const sst2Weights = readSafetensors(path.join(model('sst2'), 'model.safetensors'));
    const colaWeights = readSafetensors(path.join(model('cola'), 'model.safetensors'));
    const encoder = readSafetensors(path.join(out, 'encoder', 'model.safetensors'));
    for (const name of encoder.names()) expectBitEqual(encoder.float32(name), sst2Weights.float32(`bert.${name}`), name);
    const cola = readSafetensors(path.join(out, 'cola', 'model.safetensors'));
    expectBitEqual(cola.float32('classifier.weight'), colaWeights.float32('classifier.weight'), 'classifier.weight');
    expectBitEqual(cola.float32('bert.pooler.dense.weight'), sst2Weights.float32('bert.pooler.dense.weight'), 'pooler');
  });

  it('writes float16 from float16 inputs (torch_dtype float16), --dtype float32 / bfloat16 on request, in the reference layout', async () => {
    const halfModels = await Promise.all(['sst2', 'cola'].map(async (t) => {
      const to = path.join(dir, 'f16', t);
      cpSync(model(t), to, { recursive: true });
      const weights = readSafetensors(path.join(model(t), 'model.safetensors'));
      await writeSafetensors(path.join(to, 'model.safetensors'), Object.fromEntries(weights.names().map((name) => [name, { dtype: 'F16' as const, shape: weights.info(name).shape, data: fromFloat32('F16', weights.float32(name)) }])));
      return to;
    }));
    const outs = { F16: path.join(dir, 'f16-out'), F32: path.join(dir, 'f32-out'), BF16: path.join(dir, 'bf16-out') };
    await mergeModels({ models: halfModels, method: 'isotropic', out: outs.F16 });
    await mergeModels({ models: halfModels, method: 'isotropic', dtype: 'F32', out: outs.F32 });
    const run = cli('merge', '--model', halfModels[0]!, '--model', halfModels[1]!, '--method', 'isotropic', '--dtype', 'bfloat16', '--out', outs.BF16);
    expect(run.status, run.stderr).toBe(0);
    for (const folder of ['encoder', 'sst2', 'cola']) {
      const wide = readSafetensors(path.join(outs.F32, folder, 'model.safetensors'));
      for (const [dtype, out] of Object.entries(outs) as ['F16' | 'F32' | 'BF16', string][]) {
        const config = JSON.parse(readFileSync(path.join(out, folder, 'config.json'), 'utf8')) as { torch_dtype: string };
        expect(config.torch_dtype, `${out}/${folder}`).toBe({ F16: 'float16', F32: 'float32', BF16: 'bfloat16' }[dtype]);
        const bytes = readFileSync(path.join(out, folder, 'model.safetensors'));
        const file = readSafetensors(path.join(out, folder, 'model.safetensors'));
        expect(file.names().sort()).toEqual(wide.names().sort());
        const tensors = Object.fromEntries(file.names().map((name) => [name, file.tensor(name)]));
        expect(Buffer.concat(encodeSafetensors(tensors)).equals(bytes), `${out}/${folder} layout`).toBe(true);
        for (const name of file.names()) {
          expect(file.info(name).dtype).toBe(dtype);
          // The narrow files hold the float32 merge rounded to nearest even.
          expect(Buffer.from(file.tensor(name).data.buffer).equals(Buffer.from(fromFloat32(dtype, wide.float32(name)).buffer)), `${out}/${folder} ${name}`).toBe(true);
        }
      }
    }
  });

  it('every merged folder has a model card naming the method, its parameters and lambdas, and each input with its fingerprints', async () => {
    const out = path.join(dir, 'carded');
    const run = cli('merge', '--model', model('sst2'), '--fisher', fisherFile('sst2'), '--model', model('cola'), '--fisher', fisherFile('cola'), '--lambda', '1,0.5', '--out', out);
    expect(run.status, run.stderr).toBe(0);
    const inputs = await Promise.all(['sst2', 'cola'].map(async (t) => ({ dir: model(t), fingerprint: await modelFingerprint(await describeModel(model(t))), fisher: await readMaskFisher(fisherFile(t)) })));
    // fisher records the sha256 of the weights it ran (hashed on a thread while the batches ran).
    for (const i of inputs) expect(i.fisher.modelFingerprint).toBe(i.fingerprint);
    for (const folder of ['encoder', 'sst2', 'cola']) {
      const card = readFileSync(path.join(out, folder, 'README.md'), 'utf8');
      expect(card).toContain('| method | mask-fisher |');
      expect(card).toContain('| parameters | universal=true, normalize="none" |');
      expect(card).toContain('| lambdas | 1, 0.5 |');
      expect(card).toContain('| weights dtype | F32 |');
      for (const i of inputs) expect(card).toContain(`| \`${i.dir}\` | \`${i.fingerprint}\` | maskFisher: \`${fisherFile(i.fisher.task)}\` | ${i.fisher.examples} | \`${i.fisher.dataFingerprint}\` | - |`);
      expect(card).toContain('Not evaluated.');
    }
    expect(readFileSync(path.join(out, 'cola', 'README.md'), 'utf8')).toContain('the classifier of `cola`');
  });
});

describe('bad input to fisher and merge: one clear line, exit 1, no output left behind', () => {
  const expectRefused = (args: string[], message: RegExp, out: string) => {
    const run = cli(...args);
    expect(run.status).toBe(1);
    expect(errorLine(run.stderr)).toMatch(message);
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(out)).toBe(false);
  };

  it('models of different shapes', async () => {
    const other = await writeModel(tinyBert(5, 2));
    const out = path.join(dir, 'bad-shapes');
    expectRefused(['merge', '--model', model('sst2'), '--model', other, '--method', 'isotropic', '--out', out], /cannot merge encoders of different (shapes|structure): .*sst2/, out);
  });

  it('a Fisher file computed on another model', () => {
    const out = path.join(dir, 'bad-fingerprint');
    expectRefused(['merge', '--model', model('sst2'), '--fisher', fisherFile('cola'), '--model', model('cola'), '--fisher', fisherFile('sst2'), '--out', out], /cola\.mask\.safetensors: Fisher statistics were computed on another model .* not .*sst2/, out);
  });

  it('lambdas of the wrong count, and a Fisher file missing for a model', () => {
    const out = path.join(dir, 'bad-lambda');
    expectRefused(['merge', '--model', model('sst2'), '--fisher', fisherFile('sst2'), '--model', model('cola'), '--fisher', fisherFile('cola'), '--lambda', '1,2,3', '--out', out], /--lambda has 3 values but 2 models/, out);
    expectRefused(['merge', '--model', model('sst2'), '--fisher', fisherFile('sst2'), '--model', model('cola'), '--out', out], /mask-fisher needs one --fisher file per --model: got 1 for 2 models/, out);
  });

  it('Fisher files of different models cannot be added', () => {
    const out = path.join(dir, 'bad-add.safetensors');
    expectRefused(['fisher-add', '--fisher', fisherFile('sst2'), '--fisher', fisherFile('cola'), '--out', out], /cola\.mask\.safetensors: cannot add Fisher statistics with different modelFingerprint/, out);
  });

  it('a task whose columns the data lacks', () => {
    const out = path.join(dir, 'bad-columns.safetensors');
    expectRefused(['fisher', '--model', model('rte'), '--data', train('sst2'), '--task', 'rte', '--samples', '8', '--out', out], /train-00000-of-00001\.parquet.*column 'sentence1'/, out);
  });

  it('a model whose classifier does not fit the task', () => {
    const out = path.join(dir, 'bad-head.safetensors');
    expectRefused(['fisher', '--model', model('stsb'), '--data', train('sst2'), '--task', 'sst2', '--out', out], /stsb: the classifier has 1 outputs but task sst2 has 2 labels/, out);
  });
});
