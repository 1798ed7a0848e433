import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { errorLine, tempDir } from '../support.ts';

/** `fisher-merge merge CONFIG.yaml` (mergekit's vocabulary) against the flag form of the same merge. */
const root = path.resolve(import.meta.dirname, '../..');
const dir = tempDir('fisher-merge-merge-config-');
const models = path.join(root, 'data/models');

function cli(...args: string[]) {
  const run = spawnSync(process.execPath, [path.join(root, 'bin/fisher-merge.mjs'), ...args], { encoding: 'utf8', cwd: root });
  return { status: run.status, stderr: run.stderr.trim() };
}

function sameEncoder(a: string, b: string): void {
  const [x, y] = [a, b].map((d) => readSafetensors(path.join(d, 'encoder', 'model.safetensors')));
  expect(x!.names()).toEqual(y!.names());
  for (const name of x!.names()) expect(Buffer.from(x!.float32(name).buffer).equals(Buffer.from(y!.float32(name).buffer)), name).toBe(true);
}

/** merge.json's models carry the examples and data fingerprint their Fisher files record. */
function expectFisherData(provenance: { models: { fisher_examples: unknown; fisher_data_fingerprint: unknown }[] }, fishers: string[]): void {
  const recorded = fishers.map((f) => readSafetensors(f).metadata);
  expect(recorded.every((m) => /^[0-9a-f]{64}$/.test(m.data_fingerprint ?? ''))).toBe(true);
  expect(provenance.models.map((m) => [m.fisher_examples, m.fisher_data_fingerprint])).toEqual(recorded.map((m) => [Number(m.examples), m.data_fingerprint]));
}

/** `models:` lines of fixture models whose statistics are computed from their training data (`extra`: more `data` keys). */
function modelsWithData(extra: Record<string, string>): string[] {
  return ['models:', ...Object.entries(extra).flatMap(([t, more]) => [`  - model: ${models}/${t}`, `    data: { path: ${root}/data/glue/${t}/train-00000-of-00001.parquet, task: ${t}${more} }`])];
}

describe('merge CONFIG.yaml', () => {
  it('equals the flag form (dtype included), and merge.json records the effective parameters with their defaults', () => {
    writeFileSync(path.join(dir, 'ties.yaml'), [
      'merge_method: ties',
      `base_model: ${models}/base`,
      'parameters: { density: 0.4 }',
      'models:',
      `  - model: ${models}/sst2`,
      '    parameters: { weight: 0.6 }',
      `  - model: ${models}/cola`,
      '    parameters: { weight: 1.4 }',
      'dtype: bfloat16',
      'out: ties-out',
    ].join('\n'));
    const fromConfig = cli('merge', path.join(dir, 'ties.yaml'));
    expect(fromConfig.status, fromConfig.stderr).toBe(0);
    const flags = cli('merge', '--method', 'ties', '--base', `${models}/base`, '--model', `${models}/sst2`, '--model', `${models}/cola`, '--lambda', '0.6,1.4', '--param', 'density=0.4', '--dtype', 'bfloat16', '--out', path.join(dir, 'ties-flags'));
    expect(flags.status, flags.stderr).toBe(0);
    sameEncoder(path.join(dir, 'ties-out'), path.join(dir, 'ties-flags'));
    const written = readSafetensors(path.join(dir, 'ties-out', 'sst2', 'model.safetensors'));
    expect(written.info('bert.pooler.dense.weight').dtype).toBe('BF16');
    expect(JSON.parse(readFileSync(path.join(dir, 'ties-out', 'sst2', 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
    const provenance = JSON.parse(readFileSync(path.join(dir, 'ties-out', 'merge.json'), 'utf8'));
    expect(provenance).toMatchObject({ method: 'ties', params: { density: 0.4, scale: 1 }, lambdas: [0.6, 1.4], base: `${models}/base` });
    expect(provenance.models.map((m: { params: unknown }) => m.params)).toEqual([{ density: 0.4 }, { density: 0.4 }]);
  });

  /**
   * `merge NAME.yaml` with these lines and models sst2 and cola given `data`, against `merge` with the
   * statistic files it computed (of `kind`, with `flags`); returns its merge.json and those files.
   */
  function mergeFromData(name: string, lines: string[], cola: string, kind: string, flags: string[]): { provenance: { params: unknown; models: { fisher_examples: unknown; fisher_data_fingerprint: unknown }[] }; files: string[] } {
    writeFileSync(path.join(dir, `${name}.yaml`), [...lines, ...modelsWithData({ sst2: '', cola }), `out: ${dir}/${name}-out`].join('\n'));
    const run = cli('merge', path.join(dir, `${name}.yaml`));
    expect(run.status, run.stderr).toBe(0);
    const files = ['sst2', 'cola'].map((t) => path.join(dir, `${name}-out.fisher`, `${t}.${kind}.safetensors`));
    const flagRun = cli('merge', ...flags, '--model', `${models}/sst2`, '--fisher', files[0]!, '--model', `${models}/cola`, '--fisher', files[1]!, '--out', path.join(dir, `${name}-flags`));
    expect(flagRun.status, flagRun.stderr).toBe(0);
    sameEncoder(path.join(dir, `${name}-out`), path.join(dir, `${name}-flags`));
    const provenance = JSON.parse(readFileSync(path.join(dir, `${name}-out`, 'merge.json'), 'utf8'));
    expectFisherData(provenance, files);
    return { provenance, files };
  }

  it("computes a model's Fisher from `data`, beside the output, and merges with it", () => {
    const { provenance, files } = mergeFromData('fisher', ['merge_method: mask-fisher', 'fisher: { samples: 16, batch_size: 8 }'], ', samples: 8', 'mask', []);
    expect(files.map((f) => readSafetensors(f).metadata.examples)).toEqual(['16', '8']);
    expect(provenance.params).toEqual({ universal: true, normalize: 'none' });
  });

  it("regmean computes each model's Gram statistics from `data` (the `gram` section), equal to the flag form on those files", () => {
    const { provenance, files } = mergeFromData('regmean', ['merge_method: regmean', 'parameters: { alpha: 0.9 }', 'gram: { samples: 64, batch_size: 16 }'], '', 'gram', ['--method', 'regmean', '--param', 'alpha=0.9']);
    expect(files.map((f) => readSafetensors(f).metadata.examples)).toEqual(['64', '64']);
    expect(provenance.params).toEqual({ alpha: 0.9, ridge: 0 });
  });

  it("merge.json records each full Fisher file's examples and data fingerprint", () => {
    const fishers = ['sst2', 'cola'].map((t) => {
      const out = path.join(dir, `${t}.full.safetensors`);
      const run = cli('fisher', '--kind', 'full', '--model', `${models}/${t}`, '--data', `${root}/data/glue/${t}/train-00000-of-00001.parquet`, '--task', t, '--samples', t === 'sst2' ? '4' : '3', '--out', out);
      expect(run.status, run.stderr).toBe(0);
      return out;
    });
    const merged = path.join(dir, 'full-out');
    const run = cli('merge', '--method', 'full-fisher', '--model', `${models}/sst2`, '--fisher', fishers[0]!, '--model', `${models}/cola`, '--fisher', fishers[1]!, '--out', merged);
    expect(run.status, run.stderr).toBe(0);
    expectFisherData(JSON.parse(readFileSync(path.join(merged, 'merge.json'), 'utf8')), fishers);
  });

  it('a bad config is one line naming the file and the key; a config and flags together are refused', () => {
    writeFileSync(path.join(dir, 'bad.yaml'), `merge_method: ties\nmodels: [{ model: ${models}/sst2 }, { model: ${models}/cola }]\nout: bad-out\n`);
    const bad = cli('merge', path.join(dir, 'bad.yaml'));
    expect(bad.status).toBe(1);
    expect(errorLine(bad.stderr)).toBe(`${path.join(dir, 'bad.yaml')}: base_model: expected a base model folder (method ties needs one), got nothing`);
    const both = cli('merge', path.join(dir, 'bad.yaml'), '--out', path.join(dir, 'x'));
    expect(both.status).toBe(1);
    expect(errorLine(both.stderr)).toMatch(/give either .*bad\.yaml or the --model\/--fisher\/--out flags, not both/);
    expect(existsSync(path.join(dir, 'bad-out'))).toBe(false);
  });
});
