// Outputs never land on inputs, failures leave no temporary files, and file-system errors are one line naming the path.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { refuseOutputOnInputs, UserError, writeFileAtomic } from '@fisher-merge/core';
import { mergeModels } from '@fisher-merge/merge-writer';
import { writeStreamConfig } from '../stream-job/helpers.ts';
import { tempDir } from '../support.ts';
import { cli, editedModel, expectRefused, glueFile, modelDir } from './support.ts';

const COLA = modelDir('cola');

/** Every entry under a directory with its size, to show a refused command changed nothing. */
function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).map((e) => `${path.relative(dir, path.join(e.parentPath, e.name))}:${e.isFile() ? statSync(path.join(e.parentPath, e.name)).size : 'd'}`).sort();
}

describe('outputs never land on inputs', () => {
  it('the guard refuses an output that is, contains or lies inside an input, and passes a sibling', () => {
    const root = tempDir();
    const model = path.join(root, 'models', 'a');
    mkdirSync(model, { recursive: true });
    const inputs = [{ what: '--model', path: model }];
    expect(() => refuseOutputOnInputs({ what: '--out', path: model }, inputs)).toThrow(`--out ${model} is the input --model ${model}`);
    expect(() => refuseOutputOnInputs({ what: '--out', path: path.join(root, 'models') }, inputs)).toThrow(/contains the input --model/);
    expect(() => refuseOutputOnInputs({ what: '--out', path: path.join(model, 'x', 'f.safetensors') }, inputs)).toThrow(/lies inside the input --model/);
    expect(() => refuseOutputOnInputs({ what: '--out', path: `${model}b` }, inputs)).not.toThrow();
    expect(() => refuseOutputOnInputs({ what: '--out', path: path.join(root, 'models', '.', 'a', '..', 'a') }, inputs)).toThrow(UserError);
  });

  it('merge --out onto an input model folder, or its parent, is refused and the input stays as it was', async () => {
    const sst2 = editedModel(modelDir('sst2'), {});
    const before = snapshot(path.dirname(sst2));
    await expect(mergeModels({ models: [sst2, COLA], method: 'isotropic', out: sst2 })).rejects.toThrow(`merge output ${sst2} is the input model ${sst2}`);
    await expect(mergeModels({ models: [sst2, COLA], method: 'isotropic', out: path.dirname(sst2) })).rejects.toThrow(/contains the input model/);
    expectRefused(cli(['merge', '--model', sst2, '--model', COLA, '--method', 'isotropic', '--out', path.dirname(sst2)]), /merge output .* contains the input model/);
    expect(snapshot(path.dirname(sst2))).toEqual(before);
  });

  it("fisher --out onto an input's model.safetensors is refused and the weights are untouched", () => {
    const sst2 = editedModel(modelDir('sst2'), { config: (c) => c });
    const weights = path.join(sst2, 'model.safetensors');
    const before = readFileSync(weights);
    expectRefused(cli(['fisher', '--model', sst2, '--data', glueFile('sst2'), '--task', 'sst2', '--samples', '4', '--out', weights]), /--out .*model\.safetensors lies inside the input --model/);
    expect(readFileSync(weights).equals(before)).toBe(true);
  });
});

describe('job configs: out never lands on an input', () => {
  it('a stream out inside a watched directory is refused naming the task key, and nothing is written', () => {
    const watch = tempDir();
    const out = path.join(watch, 'out');
    const config = writeStreamConfig(path.join(tempDir(), 'stream.yaml'), out, [{ task: 'sst2', watch }]);
    expectRefused(cli(['stream', config, '--exit-when-idle', '100']), /out .*\/out lies inside the input tasks\[0\]\.watch/);
    expect(readdirSync(watch)).toEqual([]);
  });

  it('a run out inside a task model folder is refused naming the config key, and the model is untouched', () => {
    const model = editedModel(modelDir('sst2'), {});
    const before = snapshot(model);
    const file = path.join(tempDir(), 'run.yaml');
    writeFileSync(file, stringify({
      out: path.join(model, 'results'),
      tasks: [{ task: 'sst2', model, train: glueFile('sst2', 'train'), validation: glueFile('sst2') }],
      methods: ['isotropic'],
    }));
    expectRefused(cli(['run', file]), /run\.yaml: out .*results lies inside the input tasks\[0\]\.model/);
    expect(snapshot(model)).toEqual(before);
  });
});

describe('failures leave no temporary file', () => {
  it('writeFileAtomic onto an existing directory is one line and leaves nothing behind', async () => {
    const root = tempDir();
    const target = path.join(root, 'taken');
    mkdirSync(target);
    await expect(writeFileAtomic(target, 'data')).rejects.toThrow(`${target}: cannot write: is a directory, expected a file (EISDIR on rename)`);
    expect(readdirSync(root)).toEqual(['taken']);
  });

  it('fisher --out EXISTING_DIR: one line, no temporary file', () => {
    const root = tempDir();
    const target = path.join(root, 'taken');
    mkdirSync(target);
    expectRefused(cli(['fisher', '--model', modelDir('sst2'), '--data', glueFile('sst2'), '--task', 'sst2', '--samples', '4', '--out', target]), /--out .*taken is a folder, expected a file/);
    expect(readdirSync(root)).toEqual(['taken']);
  });
});

describe('file-system errors are one line with the path', () => {
  it('--fisher DIR in merge and fisher-add', () => {
    const dir = tempDir();
    const out = path.join(tempDir(), 'out');
    expectRefused(cli(['merge', '--model', modelDir('sst2'), '--fisher', dir, '--model', COLA, '--fisher', dir, '--out', out]), new RegExp(`${dir}: is a directory, expected a file`));
    expectRefused(cli(['fisher-add', '--fisher', dir, '--fisher', dir, '--out', path.join(out, 'f.safetensors')]), new RegExp(`${dir}: is a directory, expected a file`));
  });

  it('a stream output directory that cannot be created', () => {
    const root = tempDir();
    writeFileSync(path.join(root, 'file'), '');
    const out = path.join(root, 'file', 'out');
    const config = writeStreamConfig(path.join(root, 'stream.yaml'), out, [{ task: 'sst2', watch: tempDir() }]);
    expectRefused(cli(['stream', config, '--exit-when-idle', '100']), new RegExp(`${out.replaceAll('/', '\\/')}: not a directory \\(ENOTDIR on mkdir\\)`));
  });
});
