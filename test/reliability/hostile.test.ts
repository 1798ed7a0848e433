// Each case of issue 19's "Why", as it arrived: non-finite statistics, merges that destroyed what
// was at `out`, unbounded inputs, and the smaller ones. Every refusal is one line, exit 1, and leaves
// what was there as it was.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { encodeSafetensors, readSafetensors, type TensorInfo } from '@fisher-merge/checkpoint';
import { MASK_FISHER_FORMAT, readMaskFisher, writeMaskFisher } from '@fisher-merge/fisher';
import { describeModel, modelFingerprint } from '@fisher-merge/model';
import { MAX_CONFIG_BYTES } from '@fisher-merge/config';
import { logLines, tempDir } from '../support.ts';
import { cli, editedModel, expectRefused, modelDir, REPO } from './support.ts';

const [SST2, COLA, BASE] = [modelDir('sst2'), modelDir('cola'), path.join(REPO, 'data/models/base')];
const escaped = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Mask Fisher files of the fixture models (the PyTorch goldens' sums, with the models' fingerprints). */
async function goldenFisher(task: string, dir: string, edit: { head?: (h: Float64Array) => void; meta?: Record<string, string> } = {}): Promise<string> {
  const golden = readSafetensors(path.join(REPO, 'test/fixtures/golden', task, 'mask_fisher.safetensors'));
  const [L, H] = golden.info('head_fisher').shape as [number, number];
  const I = golden.info('neuron_fisher').shape[1]!;
  const head = golden.float64('head_fisher');
  const neuron = golden.float64('neuron_fisher');
  const file = path.join(dir, `${task}.mask.safetensors`);
  const fingerprint = await modelFingerprint(await describeModel(modelDir(task)));
  if (!edit.head && !edit.meta) {
    await writeMaskFisher(file, { mode: 'batch', batchSize: 32, numLayers: L, numHeads: H, intermediateSize: I, head, neuron, examples: 128, batches: 4, task, modelFingerprint: fingerprint, dataFingerprint: '0'.repeat(64) });
    return file;
  }
  // Written as bytes: our writer refuses what these cases need.
  edit.head?.(head);
  writeFileSync(file, Buffer.concat(encodeSafetensors({
    head_fisher: { dtype: 'F32', shape: [L, H], data: Float32Array.from(head) },
    neuron_fisher: { dtype: 'F32', shape: [L, I], data: Float32Array.from(neuron) },
  }, { format: 'pt', fisher_merge: MASK_FISHER_FORMAT, mode: 'batch', batch_size: '32', examples: '128', batches: '4', task, model_fingerprint: fingerprint, data_fingerprint: '0'.repeat(64), ...edit.meta })));
  return file;
}

/** Every entry under a folder with its size or content hash stand-in, to show a refusal changed nothing. */
function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).map((e) => {
    const p = path.join(e.parentPath, e.name);
    return `${path.relative(dir, p)}:${e.isFile() ? readFileSync(p).toString('base64').slice(0, 64) : 'd'}`;
  }).sort();
}

describe('statistics are checked like weights', () => {
  it('a mask Fisher file with one NaN is refused by merge naming the file, the tensor and the index; nothing is written (it used to merge into 4.1M non-finite values)', async () => {
    const dir = tempDir();
    const bad = await goldenFisher('sst2', dir, { head: (h) => { h[1] = NaN; } });
    const good = await goldenFisher('cola', dir);
    const out = path.join(dir, 'merged');
    expectRefused(cli(['merge', '--model', SST2, '--fisher', bad, '--model', COLA, '--fisher', good, '--out', out]), new RegExp(`^${escaped(bad)}: tensor 'head_fisher' holds NaN at element 1 \\(\\[0, 1\\]\\); statistics must be finite`));
    expect(existsSync(out)).toBe(false);
  });

  it('negative sums of squares, and counts that are not whole or disagree, are refused on read', async () => {
    const dir = tempDir();
    const negative = await goldenFisher('sst2', dir, { head: (h) => { h[2] = -0.5; } });
    await expect(readMaskFisher(negative)).rejects.toThrow(/tensor 'head_fisher' holds -0\.5 at element 2 \(\[1, 0\]\); a Fisher statistic is a sum of squares and cannot be negative/);
    for (const [meta, message] of [
      [{ examples: '0' }, /metadata 'examples' must be a whole number >= 1, got 0/],
      [{ examples: '2.5' }, /metadata 'examples' must be a whole number >= 1, got 2\.5/],
      [{ batches: '200' }, /metadata 'batches' must be a whole number from 1 to the 128 examples, got 200/],
      [{ batch_size: '8' }, /metadata says 128 examples in 4 batches of at most 8; they disagree/],
    ] as const) {
      await expect(readMaskFisher(await goldenFisher('sst2', tempDir(), { meta }))).rejects.toThrow(message);
    }
  });

  it('fisher-add refuses a NaN input and an output whose sums overflow float32; --allow-nonfinite is the one escape', async () => {
    const dir = tempDir();
    const good = await goldenFisher('sst2', dir);
    const nan = await goldenFisher('sst2', tempDir(), { head: (h) => { h[0] = NaN; } });
    const out = path.join(dir, 'sum.safetensors');
    expectRefused(cli(['fisher-add', '--fisher', good, '--fisher', nan, '--out', out]), new RegExp(`^${escaped(nan)}: tensor 'head_fisher' holds NaN at element 0`));
    expect(existsSync(out)).toBe(false);
    // Each file's sums are finite float32; their sum is not.
    const huge = [await goldenFisher('sst2', tempDir(), { head: (h) => { h[3] = 3e38; } }), await goldenFisher('sst2', tempDir(), { head: (h) => { h[3] = 3e38; } })];
    expectRefused(cli(['fisher-add', '--fisher', huge[0]!, '--fisher', huge[1]!, '--out', out]), new RegExp(`^${escaped(out)}: tensor 'head_fisher' holds Infinity at element 3`));
    expect(readdirSync(dir)).toEqual([path.basename(good)]);
    const allowed = cli(['fisher-add', '--allow-nonfinite', '--fisher', good, '--fisher', nan, '--out', out]);
    expect(allowed.status, allowed.stderr).toBe(0);
    expect(readSafetensors(out).float32('head_fisher')[0]).toBeNaN();
  });
});

describe('no non-finite model is ever written', () => {
  it('merge weights of 1e308 stop the merge naming the tensor and the cause, on the CLI and in a config; nothing at out (it used to write 640 non-finite tensors)', () => {
    const dir = tempDir();
    const out = path.join(dir, 'merged');
    expectRefused(cli(['merge', '--model', SST2, '--model', COLA, '--method', 'task-arithmetic', '--base', BASE, '--lambda', '1e308,1e308', '--out', out]),
      /^merge: tensor 'bert\.[\w.]+' element \d+ is not finite: the merge computed -?(Infinity|NaN): a product or sum of the inputs overflowed/);
    const config = path.join(dir, 'merge.yaml');
    writeFileSync(config, stringify({ merge_method: 'task-arithmetic', base_model: BASE, models: [{ model: SST2, parameters: { weight: 1e308 } }, { model: COLA, parameters: { weight: 1e308 } }], out }));
    expectRefused(cli(['merge', config]), /^merge: tensor 'bert\.[\w.]+' element \d+ is not finite/);
    expect(readdirSync(dir)).toEqual(['merge.yaml']);
  });
});

describe('outputs never destroy', () => {
  it("merge CONFIG.yaml whose out names the config file itself is refused, and the YAML is kept (it used to be replaced by the output folder)", () => {
    const dir = tempDir();
    const config = path.join(dir, 'merge.yaml');
    writeFileSync(config, stringify({ merge_method: 'isotropic', models: [{ model: SST2 }, { model: COLA }], out: 'merge.yaml' }));
    const before = readFileSync(config, 'utf8');
    expectRefused(cli(['merge', config, '--overwrite']), new RegExp(`^${escaped(config)}: out ${escaped(config)} is the input config file`));
    expect(readFileSync(config, 'utf8')).toBe(before);
    // A run config's out cannot contain its own file either.
    const run = path.join(dir, 'run.yaml');
    writeFileSync(run, stringify({ out: '.', tasks: [{ task: 'sst2', model: SST2, train: path.join(REPO, 'data/glue/sst2/train-00000-of-00001.parquet') }], methods: ['isotropic'], evaluation: false }));
    expectRefused(cli(['run', run]), /run\.yaml: out .* contains the input config file/);
  });

  it('merge --out EXISTING_FOLDER (CLI and YAML) is refused naming it, and what it held stays; --overwrite / overwrite: true replace it once the new one is complete', () => {
    const dir = tempDir();
    const out = path.join(dir, 'merged');
    mkdirSync(out);
    writeFileSync(path.join(out, 'precious.txt'), 'keep me');
    const flags = ['merge', '--model', SST2, '--model', COLA, '--method', 'isotropic', '--out', out];
    expectRefused(cli(flags), new RegExp(`^merge output ${escaped(out)} already exists and is not empty; give --overwrite to replace it`));
    const config = path.join(dir, 'merge.yaml');
    writeFileSync(config, stringify({ merge_method: 'isotropic', models: [{ model: SST2 }, { model: COLA }], out: 'merged' }));
    expectRefused(cli(['merge', config]), new RegExp(`^${escaped(config)}: out ${escaped(out)} already exists and is not empty; give 'overwrite: true' \\(or --overwrite\\)`));
    expect(snapshot(out)).toEqual([`precious.txt:${Buffer.from('keep me').toString('base64')}`]);
    // A failing merge with --overwrite leaves the old output as it was: it is replaced only by a complete one.
    expectRefused(cli(['merge', '--model', SST2, '--model', COLA, '--method', 'task-arithmetic', '--base', BASE, '--lambda', '1e308,1', '--out', out, '--overwrite']), /is not finite/);
    expect(readdirSync(out)).toEqual(['precious.txt']);
    writeFileSync(config, stringify({ merge_method: 'isotropic', models: [{ model: SST2 }, { model: COLA }], out: 'merged', overwrite: true }));
    const replaced = cli(['merge', config]);
    expect(replaced.status, replaced.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['cola', 'encoder', 'merge.json', 'sst2']);
    expect(readdirSync(dir).sort()).toEqual(['merge.yaml', 'merged']);
  });

  it('an existing file at a folder output is refused even with --overwrite (it used to be replaced by a folder); an empty folder is taken', () => {
    const dir = tempDir();
    const file = path.join(dir, 'notes.txt');
    writeFileSync(file, 'mine');
    expectRefused(cli(['merge', '--model', SST2, '--model', COLA, '--method', 'isotropic', '--out', file, '--overwrite']), new RegExp(`^merge output ${escaped(file)} is a file, expected a folder`));
    expect(readFileSync(file, 'utf8')).toBe('mine');
    const empty = path.join(dir, 'empty');
    mkdirSync(empty);
    const run = cli(['merge', '--model', SST2, '--model', COLA, '--method', 'isotropic', '--out', empty]);
    expect(run.status, run.stderr).toBe(0);
    expect(existsSync(path.join(empty, 'merge.json'))).toBe(true);
  });

  it('file outputs (fisher-add, report, tokenize --out) refuse an existing file unless --overwrite', async () => {
    const dir = tempDir();
    const a = await goldenFisher('sst2', dir);
    const b = await goldenFisher('sst2', tempDir());
    const out = path.join(dir, 'existing');
    for (const args of [['fisher-add', '--fisher', a, '--fisher', b], ['report', a], ['tokenize', '--model', SST2, '--data', path.join(REPO, 'data/glue/sst2/validation-00000-of-00001.parquet'), '--task', 'sst2', '--limit', '4']]) {
      writeFileSync(out, 'old');
      expectRefused(cli([...args, '--out', out]), new RegExp(`^--out ${escaped(out)} already exists; give --overwrite to replace it`));
      expect(readFileSync(out, 'utf8')).toBe('old');
      const replaced = cli([...args, '--out', out, '--overwrite']);
      expect(replaced.status, replaced.stderr).toBe(0);
      expect(readFileSync(out, 'utf8')).not.toBe('old');
    }
  });
});

describe('inputs are bounded', () => {
  it(`a config over ${MAX_CONFIG_BYTES} bytes is refused before it is parsed (a 50 MB YAML used to cost 2.2 GB)`, () => {
    const dir = tempDir();
    const config = path.join(dir, 'big.yaml');
    writeFileSync(config, `out: x\n# ${'x'.repeat(MAX_CONFIG_BYTES)}\n`);
    for (const command of ['merge', 'run', 'stream']) {
      expectRefused(cli([command, config]), new RegExp(`^${escaped(config)}: config file is ${MAX_CONFIG_BYTES + 10} bytes, more than the ${MAX_CONFIG_BYTES} \\(1 MiB\\) a config may have$`));
    }
  });

  it('a long value is cut in the error line that echoes it (a 52 MB value used to be echoed whole)', () => {
    const dir = tempDir();
    const config = path.join(dir, 'merge.yaml');
    writeFileSync(config, stringify({ merge_method: 'isotropic', models: [{ model: SST2, parameters: { weight: 'w'.repeat(500_000) } }, { model: COLA }], out: 'o' }));
    const run = cli(['merge', config]);
    expectRefused(run, /parameters\.weight: expected a number >= 0, got "w+\.\.\. \(500002 characters\)/);
    expect(logLines(run.stderr).find((l) => l.event === 'error')!.message!.length).toBeLessThan(300);
    const key = path.join(dir, 'key.yaml');
    writeFileSync(key, stringify({ ['k'.repeat(400_000)]: 1, models: [], out: 'o' }));
    const keyRun = cli(['merge', key]);
    expectRefused(keyRun, /k+\.\.\. \(400000 characters\): unknown key/);
    expect(logLines(keyRun.stderr).find((l) => l.event === 'error')!.message!.length).toBeLessThan(500);
    expectRefused(cli(['merge', '--model', SST2, '--model', COLA, '--lambda', `1,${'9'.repeat(100_000)}x`, '--out', path.join(dir, 'o')]), /--lambda must be comma-separated numbers, got '1,9+\.\.\. \(100003 characters\)'$/);
    expectRefused(cli(['merge', '--model', SST2, '--method', 'm'.repeat(100_000), '--out', path.join(dir, 'o')]), /^option '--method <name>' argument 'm+\.\.\. \(100000 characters\)' is invalid/);
  });

  it('report on a Fisher file with H = 200000 is one line naming the file (it used to die of a stack overflow)', () => {
    const dir = tempDir();
    const file = path.join(dir, 'wide.safetensors');
    const shape = (L: number, n: number): TensorInfo => ({ dtype: 'F32', shape: [L, n] });
    writeFileSync(file, Buffer.concat(encodeSafetensors({
      head_fisher: { ...shape(2, 200_000), data: new Float32Array(400_000) },
      neuron_fisher: { ...shape(2, 4), data: new Float32Array(8) },
    }, { fisher_merge: MASK_FISHER_FORMAT, mode: 'batch', batch_size: '8', examples: '8', batches: '1' })));
    expectRefused(cli(['report', file, '--out', path.join(dir, 'r.html')]), new RegExp(`^${escaped(file)}: numHeads 200000 is beyond the largest encoder these tools accept \\(512\\)`));
    expect(readdirSync(dir)).toEqual(['wide.safetensors']);
  });
});

describe('the smaller ones', () => {
  it('--modle is an unknown option with a suggestion, not a missing --model', () => {
    expectRefused(cli(['predict', '--modle', SST2, '--data', 'x.parquet', '--task', 'sst2']), /^unknown option --modle; did you mean --model\?$/);
    expectRefused(cli(['fisher', '--modle', SST2, '--data', 'x.parquet', '--task', 'sst2', '--out', 'x']), /^unknown option --modle; did you mean one of --mode, --model\?$/);
  });

  it('a state folder that cannot hold the lock is one line naming it (it used to read "lock: not a directory (ENOTDIR)")', () => {
    const dir = tempDir();
    const watch = path.join(dir, 'incoming');
    mkdirSync(watch);
    const out = path.join(dir, 'out');
    mkdirSync(out);
    writeFileSync(path.join(out, 'state'), '');
    const config = path.join(dir, 'stream.yaml');
    writeFileSync(config, stringify({ out, engine: 'onnx', tasks: [{ task: 'sst2', model: SST2, watch }] }));
    expectRefused(cli(['stream', config, '--exit-when-idle', '100']), new RegExp(`^stream output ${escaped(out)}: cannot take its lock ${escaped(path.join(out, 'state', 'lock'))}: ${escaped(path.join(out, 'state'))} is a file, expected a folder this job can write$`));
  });

  it('a config.json without model_type is recognized by its tensors, and the merged config.json names the family', async () => {
    const bare = editedModel(SST2, { config: (c) => { delete c.model_type; } });
    expect((await describeModel(bare)).family.name).toBe('bert');
    const roberta = editedModel(path.join(REPO, 'test/fixtures/families/roberta'), { config: (c) => { delete c.model_type; } });
    expect((await describeModel(roberta)).family.name).toBe('roberta');
    const out = path.join(tempDir(), 'merged');
    const run = cli(['merge', '--model', bare, '--model', COLA, '--method', 'isotropic', '--out', out]);
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(readFileSync(path.join(out, 'sst2', 'config.json'), 'utf8')).model_type).toBe('bert');
    expect(JSON.parse(readFileSync(path.join(out, 'encoder', 'config.json'), 'utf8')).model_type).toBe('bert');
  });
});
