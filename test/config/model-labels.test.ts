import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { readMergeConfig, readRunConfig } from '@fisher-merge/merge-job';
import { loadStreamConfig } from '@fisher-merge/stream-job';
import { tempDir } from '../support.ts';

// stsb's fixture checkpoint has one output (regression); a custom task's default would be 2 classes.
const stsb = path.resolve('data/models/stsb');
const sst2 = path.resolve('data/models/sst2');
const custom = { name: 'similarity', text_column: 'sentence1', text_pair_column: 'sentence2' };

function write(doc: unknown): string {
  const file = path.join(tempDir(), 'config.yaml');
  writeFileSync(file, stringify(doc));
  return file;
}

describe('custom tasks in YAML configs take their label count from the model, as the CLI does', () => {
  it('run, stream and merge configs: no num_labels on a one-output model gives a regression task', async () => {
    const run = await readRunConfig(write({ tasks: [{ ...custom, model: stsb, train: 't', validation: 'v' }] }));
    const stream = await loadStreamConfig(write({ out: 'o', tasks: [{ ...custom, model: stsb, watch: 'w' }] }));
    const merge = await readMergeConfig(write({ out: 'o', models: [{ model: stsb, data: { path: 'd', ...custom } }, { model: sst2, fisher: 'f' }] }));
    for (const spec of [run.tasks[0]!.spec, stream.tasks[0]!.spec, merge.models[0]!.data!.spec]) {
      expect(spec).toMatchObject({ name: 'similarity', textColumn: 'sentence1', textPairColumn: 'sentence2', labelColumn: 'label', labelKind: 'regression', numLabels: 1 });
    }
  });

  it('a num_labels in the config is kept, and GLUE presets are untouched', async () => {
    const run = await readRunConfig(write({ tasks: [{ ...custom, num_labels: 3, model: stsb, train: 't', validation: 'v' }, { task: 'sst2', model: sst2, train: 't', validation: 'v' }] }));
    expect(run.tasks[0]!.spec).toMatchObject({ labelKind: 'class', numLabels: 3 });
    expect(run.tasks[1]!.spec).toMatchObject({ name: 'sst2', numLabels: 2 });
  });

  it("a custom task's model without config.json is one line naming the file", async () => {
    const missing = path.join(tempDir(), 'no-model');
    await expect(readRunConfig(write({ tasks: [{ ...custom, model: missing, train: 't', validation: 'v' }] }))).rejects.toThrow(`${path.join(missing, 'config.json')}: cannot read (ENOENT)`);
  });
});
