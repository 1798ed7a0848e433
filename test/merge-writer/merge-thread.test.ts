import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { UserError } from '@fisher-merge/core';
import { mergeModels, mergeModelsInThread } from '@fisher-merge/merge-writer';
import { writeRandomCheckpoint } from '../../bench/random-checkpoint.ts';
import { modelDir, tempDir } from '../stream-job/helpers.ts';
import { partialFiles } from '../support.ts';

const tensors = (dir: string) => readFileSync(path.join(dir, 'model.safetensors'));

describe('mergeModelsInThread', () => {
  it('writes what mergeModels writes; a UserError in the thread is a UserError for the caller', async () => {
    const dir = tempDir();
    const models = [modelDir('sst2'), modelDir('cola')];
    await mergeModels({ models, method: 'isotropic', out: path.join(dir, 'here') });
    const result = await mergeModelsInThread({ models, method: 'isotropic', out: path.join(dir, 'thread') });
    expect(Object.keys(result.outputs.models)).toEqual(['sst2', 'cola']);
    for (const folder of ['encoder', 'sst2', 'cola']) expect(tensors(path.join(dir, 'thread', folder)).equals(tensors(path.join(dir, 'here', folder)))).toBe(true);
    const refused = mergeModelsInThread({ models: [modelDir('sst2'), modelDir('sst2')], method: 'isotropic', out: path.join(dir, 'twice') });
    await expect(refused).rejects.toBeInstanceOf(UserError);
    await expect(refused).rejects.toThrow(/share the folder name 'sst2'/);
  });

  it("leaves the caller's event loop free: it sees the output file grow while the thread writes it", async () => {
    const dir = tempDir();
    const model = path.join(dir, 'model');
    await writeRandomCheckpoint(model, { numLayers: 4, hiddenSize: 512, numHeads: 8, intermediateSize: 2048 });
    const out = path.join(dir, 'merged');
    let settled = false;
    const merging = mergeModelsInThread({ models: [model], method: 'isotropic', out }).finally(() => (settled = true));
    // A merge on this loop writes each file in one synchronous pass: no turn of the loop could see it half written.
    const seen = new Map<string, Set<number>>();
    while (!settled) {
      for (const [file, size] of partialFiles(dir)) seen.set(file, (seen.get(file) ?? new Set()).add(size));
      await turn();
    }
    await merging;
    const grew = [...seen.values()].filter((sizes) => sizes.size >= 2);
    expect(grew.length, `sizes seen: ${JSON.stringify([...seen].map(([f, s]) => [f, [...s]]))}`).toBeGreaterThan(0);
    expect(readdirSync(out).sort()).toEqual(['encoder', 'merge.json', 'model']);
  });
});
