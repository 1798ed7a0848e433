import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MERGE_RULES } from '@fisher-merge/merge';
import { parseRunConfig, readRunConfig } from '@fisher-merge/merge-job';
import { tempDir } from '../support.ts';

const root = path.resolve(import.meta.dirname, '../..');
const file = path.join(root, 'data', 'test.yaml');
const tasks = [{ task: 'sst2', model: 'models/sst2', train: 't.parquet', validation: 'v.parquet' }, { task: 'cola', model: 'models/cola', train: 't.parquet', validation: 'v.parquet' }];

describe('run config', () => {
  it('the demo config parses: paths relative to the file, defaults filled, merges resolved', async () => {
    const config = await readRunConfig(path.join(root, 'data/demo.yaml'));
    expect(config.tasks.map((t) => t.name)).toEqual(['sst2', 'cola', 'rte', 'stsb']);
    expect(config.tasks[0]!.model).toBe(path.join(root, 'data/models/sst2'));
    expect(config.output).toBe(path.join(root, 'out/demo'));
    expect(config.merges.at(-1)).toEqual(['sst2', 'cola', 'rte', 'stsb']);
    expect(config.methods.find((m) => m.rule === 'mask-fisher')!.params).toEqual({ universal: true, normalize: 'none' });
    expect(config.fisher).toEqual({ samples: 128, batchSize: 32, mode: 'batch' });
    expect(config.gram).toEqual({ samples: 128, batchSize: 32 });
    // The demo writes the table, the report and the Fisher files, not every merged model.
    expect(config.saveModels).toBe('none');
  });

  it('save_models: all, best or none (the default); best needs the evaluation that judges it', () => {
    expect(parseRunConfig(file, { tasks }).saveModels).toBe('none');
    expect(parseRunConfig(file, { tasks, save_models: 'best' }).saveModels).toBe('best');
    expect(() => parseRunConfig(file, { tasks, save_models: 'some' })).toThrow(`${file}: save_models: expected one of all, best, none, got "some"`);
    expect(() => parseRunConfig(file, { tasks, save_models: 'best', evaluation: false })).toThrow(`${file}: save_models: expected all or none when evaluation is off ('best' is judged by the validation scores), got "best"`);
  });

  it('data/methods.yaml runs every rule of the registry, each with a coefficient search', async () => {
    const config = await readRunConfig(path.join(root, 'data/methods.yaml'));
    expect(config.methods.map((m) => m.rule).sort()).toEqual(Object.keys(MERGE_RULES).sort());
    expect(config.search?.methods).toEqual(config.methods.map((m) => m.label));
    expect(config.merges).toHaveLength(6);
  });

  it('the same rule twice needs labels, which name its results', () => {
    const methods = ['mask-fisher', { merge_method: 'mask-fisher', label: 'mask-fisher-mass', parameters: { normalize: 'mass' } }];
    const config = parseRunConfig(file, { tasks, methods });
    expect(config.methods.map((m) => [m.label, m.rule, m.params.normalize])).toEqual([['mask-fisher', 'mask-fisher', 'none'], ['mask-fisher-mass', 'mask-fisher', 'mass']]);
    expect(() => parseRunConfig(file, { tasks, methods: ['isotropic', 'isotropic'] })).toThrow(/methods\[1\]: expected a label other than 'isotropic'/);
  });

  it('bad configs name the file and the key', async () => {
    const bad = (doc: unknown) => () => parseRunConfig(file, doc);
    expect(bad({ tasks, fisher: { mode: 'batch', batch_sise: 8 } })).toThrow(`${file}: fisher.batch_sise: unknown key (known: mode, batch_size, samples, seed)`);
    expect(bad({ tasks, methods: ['tie'] })).toThrow(/unknown merge method 'tie'/);
    expect(bad({ tasks, methods: [{ merge_method: 'mask-fisher', parameters: { universal: 'yes' } }] })).toThrow(/parameter 'universal' of 'mask-fisher' must be a boolean/);
    expect(bad({ tasks, methods: ['task-arithmetic'] })).toThrow(`${file}: base_model: expected a base model folder (method task-arithmetic needs one), got nothing`);
    expect(bad({ tasks, merges: [['sst2', 'qqp']] })).toThrow(`${file}: merges[0][1]: expected one of sst2, cola, got "qqp"`);
    expect(bad({ tasks: [tasks[0], { task: 'cola', model: 'm', train: 't' }] })).toThrow(`${file}: tasks[1].validation: expected a validation split path (or set evaluation: false), got nothing`);
    expect(bad({ tasks, search: { methods: ['ties'] } })).toThrow(`${file}: search.methods[0]: expected one of mask-fisher, got "ties"`);
    expect(bad({ tasks, search: { holdout: 1 } })).toThrow(`${file}: search.holdout: expected a number in (0, 1), got 1`);
    expect(bad({ tasks, evaluation: false, search: {} })).toThrow(`${file}: search: needs evaluation (a search scores merges on validation data)`);
    expect(bad({ tasks, fisher: { samples: 0 } })).toThrow(`${file}: fisher.samples: expected an integer >= 1, got 0`);
    const dir = tempDir();
    writeFileSync(path.join(dir, 'broken.yaml'), 'tasks: [unclosed');
    await expect(readRunConfig(path.join(dir, 'broken.yaml'))).rejects.toThrow(/broken\.yaml: not valid YAML/);
    await expect(readRunConfig(path.join(dir, 'absent.yaml'))).rejects.toThrow(/config file not found: .*absent\.yaml/);
  });
});
