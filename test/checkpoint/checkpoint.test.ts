import { copyFileSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError } from '@fisher-merge/core';
import { openTensorSource, readSafetensors, saveCheckpoint, writeSafetensors } from '@fisher-merge/checkpoint';
import { randomF32, rng, tempDir } from './helpers.ts';

async function expectUserError(p: Promise<unknown> | (() => unknown), message: string | RegExp): Promise<void> {
  let error: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(UserError);
  if (typeof message === 'string') expect((error as Error).message).toBe(message);
  else expect((error as Error).message).toMatch(message);
}

describe('sharded checkpoints', () => {
  it('reads tensors through model.safetensors.index.json, opening only the shards needed', async () => {
    const dir = tempDir();
    const random = rng(1);
    const a = randomF32([3, 2], random);
    const b = randomF32([4], random);
    await writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), { a });
    await writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), { b });
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({
      metadata: { total_size: 40 },
      weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' },
    }));
    const source = openTensorSource(dir);
    expect(source.names().sort()).toEqual(['a', 'b']);
    expect(source.files.map((f) => path.basename(f))).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(source.fileOf('b')).toBe(path.join(dir, 'model-00002-of-00002.safetensors'));
    expect(source.float32('b')).toEqual(b.data);
    expect(source.info('a')).toEqual({ dtype: 'F32', shape: [3, 2] });
    // Lazy: a corrupt shard that is never asked for does not matter.
    writeFileSync(path.join(dir, 'model-00001-of-00002.safetensors'), 'garbage');
    expect(openTensorSource(dir).float32('b')).toEqual(b.data);
    await expectUserError(() => openTensorSource(dir).tensor('a'), `${dir}/model-00001-of-00002.safetensors: file is 7 bytes, too short for a safetensors header`);
  });

  it('reports missing shards, bad shard names and tensors absent from their shard', async () => {
    const dir = tempDir();
    await writeSafetensors(path.join(dir, 's1.safetensors'), { a: randomF32([1], rng(2)) });
    const index = (weightMap: Record<string, string>) => writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    index({ a: 's1.safetensors', b: 's2.safetensors' });
    await expectUserError(() => openTensorSource(dir), `${dir}/model.safetensors.index.json: shard file 's2.safetensors' does not exist in ${dir}`);
    index({ a: '../s1.safetensors' });
    await expectUserError(() => openTensorSource(dir), `${dir}/model.safetensors.index.json: tensor 'a' maps to an invalid shard file name "../s1.safetensors"`);
    index({ a: 's1.safetensors', z: 's1.safetensors' });
    await expectUserError(() => openTensorSource(dir).tensor('z'), `${dir}/s1.safetensors: tensor 'z' is listed in ${dir}/model.safetensors.index.json but missing from the shard`);
  });

  it('reads sharded pytorch_model.bin checkpoints through their index', () => {
    const dir = tempDir();
    copyFileSync('test/fixtures/checkpoint/mixed/pytorch_model.bin', path.join(dir, 'pytorch_model-00001-of-00001.bin'));
    writeFileSync(path.join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ weight_map: { f64: 'pytorch_model-00001-of-00001.bin' } }));
    const source = openTensorSource(dir);
    expect(source.names()).toEqual(['f64']);
    expect(source.info('f64')).toEqual({ dtype: 'F64', shape: [3] });
    expect(source.float32('f64')).toEqual(new Float32Array(source.tensor('f64').data as Float64Array));
  });

  it('names the folder when it has no weights', async () => {
    const dir = tempDir();
    await expectUserError(() => openTensorSource(dir), `${dir}: no weights found (expected one of model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)`);
  });
});

describe('saveCheckpoint', () => {
  it('writes config, safetensors with {"format":"pt"} and the tokenizer files present, atomically', async () => {
    const parent = tempDir();
    const target = path.join(parent, 'merged');
    const w = randomF32([2, 2], rng(3));
    await saveCheckpoint(target, { hfConfig: { model_type: 'bert', hidden_size: 2 }, tensors: { w }, copyFilesFrom: 'data/models/sst2' });
    expect(readdirSync(target).sort()).toEqual(['config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);
    expect(JSON.parse(readFileSync(path.join(target, 'config.json'), 'utf8'))).toEqual({ model_type: 'bert', hidden_size: 2 });
    const st = readSafetensors(path.join(target, 'model.safetensors'));
    expect(st.metadata).toEqual({ format: 'pt' });
    expect(st.float32('w')).toEqual(w.data);
    expect(readFileSync(path.join(target, 'vocab.txt')).equals(readFileSync('data/models/sst2/vocab.txt'))).toBe(true);
    expect(readdirSync(parent)).toEqual(['merged']);
  });

  it('leaves nothing behind, and keeps an existing folder, when writing fails', async () => {
    const parent = tempDir();
    const target = path.join(parent, 'out');
    await saveCheckpoint(target, { hfConfig: { a: 1 }, tensors: { w: randomF32([1], rng(4)) } });
    const bad = { dtype: 'F32' as const, shape: [3], data: new Float32Array(2) };
    await expect(saveCheckpoint(target, { hfConfig: { a: 2 }, tensors: { w: bad } })).rejects.toThrow("tensor 'w': shape [3] needs 3 elements, data has 2");
    expect(readdirSync(parent)).toEqual(['out']);
    expect(JSON.parse(readFileSync(path.join(target, 'config.json'), 'utf8'))).toEqual({ a: 1 });
    expect(existsSync(path.join(target, 'model.safetensors'))).toBe(true);
  });
});
