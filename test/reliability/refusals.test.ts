// Wrong successes of old: inputs that used to be accepted and are now refused in one line.
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bufferSource, parsePytorchBin, readSafetensors, encodeSafetensors } from '@fisher-merge/checkpoint';
import { describeModel } from '@fisher-merge/model';
import { mergeModels } from '@fisher-merge/merge-writer';
import { torchCheckpoint } from '../fuzz/torch-zip.ts';
import { tempDir } from '../support.ts';
import { cli, editedModel, expectRefused, modelDir } from './support.ts';

describe('refused inputs', () => {
  it('--lambda ,1 (the empty item used to be taken as 0)', () => {
    expectRefused(cli(['merge', '--model', modelDir('sst2'), '--model', modelDir('cola'), '--method', 'isotropic', '--lambda', ',1', '--out', path.join(tempDir(), 'out')]),
      /--lambda must be comma-separated numbers, got ',1'/);
  });

  it('a checkpoint with classifier.bias but no classifier.weight (it used to merge into a folder that cannot predict)', async () => {
    const st = readSafetensors(path.join(modelDir('sst2'), 'model.safetensors'));
    const tensors = Object.fromEntries(st.names().filter((n) => n !== 'classifier.weight').map((n) => [n, st.tensor(n)]));
    const dir = editedModel(modelDir('sst2'), { weights: encodeSafetensors(tensors) });
    await expect(describeModel(dir)).rejects.toThrow(/model\.safetensors: missing tensor 'classifier\.weight'/);
  });

  it('a pickle with a negative storage offset (it used to give wrong logits)', () => {
    const storage = Float32Array.of(0, 1, 2, 3, 4, 5);
    const bin = (offset: number) => parsePytorchBin(bufferSource(torchCheckpoint([{ name: 'w', storage: '0', numel: 6, offset, shape: [2, 2], stride: [2, 1] }], { 0: storage })), 'pytorch_model.bin');
    expect(Array.from(bin(2).tensor('w').data as Float32Array)).toEqual([2, 3, 4, 5]);
    expect(() => bin(-2)).toThrow(/pytorch_model\.bin: a tensor in data\.pkl has storage offset -2, expected an offset >= 0/);
  });

  it('header errors in merge name the --model folder the file belongs to', async () => {
    const truncated = readFileSync(path.join(modelDir('cola'), 'model.safetensors')).subarray(0, 4000);
    const dir = editedModel(modelDir('cola'), { weights: truncated });
    await expect(mergeModels({ models: [modelDir('sst2'), dir], method: 'isotropic', out: path.join(tempDir(), 'out') })).rejects.toThrow(new RegExp(`^${dir}/model\\.safetensors: `));
  });
});
