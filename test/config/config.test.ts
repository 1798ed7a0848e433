import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { MERGE_CONFIG, parseConfig, RUN_CONFIG, STREAM_CONFIG } from '@fisher-merge/config';
import { glueTask } from '@fisher-merge/data';
import { resolveParams, resolveRule } from '@fisher-merge/merge';

/** The run, stream and merge configs: one vocabulary, one schema library (libs/config). */
const runTask = { task: 'sst2', model: 'm', train: 't', validation: 'v' };
const streamTask = { task: 'sst2', model: 'm', watch: 'w' };
const run = (doc: unknown) => () => parseConfig(RUN_CONFIG, doc, 'run.yaml');
const stream = (doc: unknown) => () => parseConfig(STREAM_CONFIG, doc, 'stream.yaml');
const merge = (doc: unknown) => () => parseConfig(MERGE_CONFIG, doc, 'merge.yaml');

describe('one config vocabulary', () => {
  it('run and stream configs read the same keys the same way: out, engine, max_length, tasks, fisher', () => {
    const shared = { out: 'o', engine: 'onnx', max_length: 64, fisher: { mode: 'example', batch_size: 4 } };
    const custom = { name: 'mine', text_column: 'a', text_pair_column: 'b', num_labels: 3 };
    const r = run({ ...shared, tasks: [runTask, { ...custom, model: 'm2', train: 't', validation: 'v' }] })();
    const s = stream({ ...shared, tasks: [streamTask, { ...custom, model: 'm2', ipc: '-' }] })();
    for (const c of [r, s]) {
      expect([c.out, c.engine, c.max_length, c.fisher.mode, c.fisher.batch_size]).toEqual(['o', 'onnx', 64, 'example', 4]);
      expect(c.tasks.map((t) => t.name)).toEqual(['sst2', 'mine']);
      expect(c.tasks[0]!.spec).toEqual(glueTask('sst2'));
      expect(c.tasks[1]!.spec).toMatchObject({ name: 'mine', textColumn: 'a', textPairColumn: 'b', numLabels: 3, labelKind: 'class' });
    }
  });

  it('the same mistake reads the same in every config: file, key path, what was expected, what was given', () => {
    const task = (extra: object) => [runTask, { ...runTask, task: 'cola', ...extra }];
    expect(run({ tasks: task({ num_labels: 'x' }) })).toThrow('run.yaml: tasks[1].num_labels: expected an integer >= 1, got "x"');
    expect(stream({ out: 'o', tasks: [streamTask, { ...streamTask, task: 'cola', num_labels: 'x' }] })).toThrow('stream.yaml: tasks[1].num_labels: expected an integer >= 1, got "x"');
    expect(merge({ out: 'o', models: [{ model: 'a', fisher: 'f' }, { model: 'b', data: { path: 'd', task: 'cola', num_labels: 'x' } }] })).toThrow('merge.yaml: models[1].data.num_labels: expected an integer >= 1, got "x"');
    for (const parse of [run({ tasks: [runTask], engine: 'gpu' }), stream({ out: 'o', tasks: [streamTask], engine: 'gpu' }), merge({ out: 'o', models: [{ model: 'a', fisher: 'f' }, { model: 'b', fisher: 'g' }], engine: 'gpu' })]) {
      expect(parse).toThrow(/\.yaml: engine: expected one of auto, onnx, tfjs, got "gpu"$/);
    }
    expect(run({ tasks: [{ ...runTask, task: 'sst2', text_column: 'x' }] })).toThrow("run.yaml: tasks[0]: needs 'task' (a GLUE preset) or 'text_column'");
    expect(stream({ out: 'o', tasks: [streamTask, streamTask] })).toThrow("stream.yaml: tasks[1].name: task name 'sst2' is used twice");
    expect(run(null)).toThrow('run.yaml: (top level): expected a mapping, got nothing');
  });

  it('older key names are refused with where they went, never silently accepted', () => {
    expect(run({ output: 'o', tasks: [runTask] })).toThrow("run.yaml: output: renamed to 'out'");
    expect(run({ tasks: [{ ...runTask, glue_task: 'sst2' }] })).toThrow("run.yaml: tasks[0].glue_task: renamed to 'task'");
    expect(run({ tasks: [runTask], base: 'b' })).toThrow("run.yaml: base: renamed to 'base_model'");
    expect(run({ tasks: [runTask], methods: [{ name: 'isotropic' }] })).toThrow("run.yaml: methods[0].name: renamed to 'merge_method'");
    expect(stream({ out: 'o', tasks: [streamTask], fisher: { max_length: 64 } })).toThrow("stream.yaml: fisher.max_length: moved to the top level ('max_length')");
    expect(stream({ out: 'o', tasks: [streamTask], merge: { params: {} } })).toThrow("stream.yaml: merge: moved: the merge rule's parameters are the top-level 'parameters'");
  });

  it('merge rule parameters are checked where they are given, by the rule', () => {
    expect(stream({ out: 'o', tasks: [streamTask], parameters: { normalize: 'most' } })).toThrow("stream.yaml: parameters: parameter 'normalize' of 'mask-fisher' must be one of none, count, mass, got 'most'");
    expect(stream({ out: 'o', tasks: [streamTask], merge_method: 'ties', base_model: 'b', parameters: { density: 2 } })).toThrow("stream.yaml: parameters: parameter 'density' of 'ties' must be a number in (0, 1], got 2");
    expect(run({ tasks: [runTask], methods: [{ merge_method: 'mask-fisher', parameters: { universal: 'yes' } }] })).toThrow("run.yaml: methods[0]: parameter 'universal' of 'mask-fisher' must be a boolean");
  });

  it('a stream job merges by any rule that needs no statistics beyond its running mask Fisher', () => {
    const s = stream({ out: 'o', tasks: [streamTask], merge_method: 'mask-fisher-ties', base_model: 'b', parameters: { density: 0.5 } })();
    expect([s.rule, s.params]).toEqual(['mask-fisher-ties', { density: 0.5, scale: 1, universal: true, normalize: 'none' }]);
    expect(stream({ out: 'o', tasks: [streamTask] })().rule).toBe('mask-fisher');
    expect(stream({ out: 'o', tasks: [streamTask], merge_method: 'full-fisher' })).toThrow('stream.yaml: merge_method: method full-fisher needs fullFisher statistics; a stream job accumulates one of mask Fisher or Gram (regmean)');
    expect(stream({ out: 'o', tasks: [streamTask], merge_method: 'dare-ties' })).toThrow('stream.yaml: base_model: expected a base model folder (method dare-ties needs one), got nothing');
  });

  it('a stream job with regmean accumulates Gram sums; decay, relative_change and a queue are refused with it, one line each', () => {
    expect(stream({ out: 'o', tasks: [streamTask], merge_method: 'regmean', parameters: { alpha: 0.9 } })().params).toEqual({ alpha: 0.9, ridge: 0 });
    expect(stream({ out: 'o', tasks: [streamTask], merge_method: 'regmean', fisher: { decay_half_life: 100 } })).toThrow('stream.yaml: fisher.decay_half_life: not available with method regmean (Gram statistics): the Gram counts stay whole positions; use 0 (no decay)');
    expect(stream({ out: 'o', tasks: [streamTask], merge_method: 'regmean', publish: { relative_change: 0.1 } })).toThrow('stream.yaml: publish.relative_change: not available with method regmean (Gram statistics): it would keep a second copy of every Gram sum; use every_examples or interval_s');
    expect(stream({ out: 'o', tasks: [streamTask], merge_method: 'regmean', queue: { url: 'redis://localhost:6379' } })).toThrow('stream.yaml: queue: not available with method regmean (Gram statistics): workers compute mask Fisher only; run regmean in one process (no queue)');
  });

  it('a stream job takes its tasks from tasks:, tasks_dir, or both; a method of a fixed model count is refused with tasks_dir', () => {
    const dirOnly = stream({ out: 'o', tasks_dir: 'tasks' })();
    expect([dirOnly.tasks, dirOnly.tasks_dir, dirOnly.tasks_dir_poll_ms]).toEqual([[], 'tasks', 1000]);
    expect(stream({ out: 'o', tasks: [streamTask], tasks_dir: 'tasks' })().tasks.map((t) => t.name)).toEqual(['sst2']);
    expect(stream({ out: 'o' })).toThrow("stream.yaml: tasks: expected a non-empty list of task entries or 'tasks_dir' (a directory of task files), got nothing");
    expect(stream({ out: 'o', tasks_dir: 'tasks', merge_method: 'slerp' })).toThrow('stream.yaml: tasks_dir: method slerp merges exactly 2 models; with tasks_dir the number of tasks changes while the job runs');
  });

  it('a mergekit-style merge config: merge_method, base_model, models with fisher or data and parameters, parameters, dtype, out', () => {
    const c = merge({
      merge_method: 'mask-fisher-ties',
      base_model: 'base',
      parameters: { density: 0.5 },
      dtype: 'float16',
      out: 'merged',
      models: [{ model: 'a', fisher: 'a.safetensors', parameters: { weight: 0.7, density: 0.3 } }, { model: 'b', data: { path: 'b.parquet', task: 'rte', samples: 64 } }],
    })();
    expect([c.rule, c.params, c.dtype, c.out, c.base_model]).toEqual(['mask-fisher-ties', resolveParams(resolveRule('mask-fisher-ties'), { density: 0.5 }), 'float16', 'merged', 'base']);
    expect(c.models[0]).toMatchObject({ model: 'a', fisher: 'a.safetensors', weight: 0.7 });
    expect(c.models[1]!.weight).toBe(1);
    expect(c.modelParams).toEqual([{ density: 0.3 }, { density: 0.5 }]);
    expect(c.models[1]!.data).toMatchObject({ path: 'b.parquet', samples: 64, spec: glueTask('rte') });
    const two = [{ model: 'a', fisher: 'f' }, { model: 'b', fisher: 'g' }];
    expect(merge({ out: 'o', merge_method: 'task-arithmetic', models: [{ model: 'a' }, { model: 'b' }] })).toThrow('merge.yaml: base_model: expected a base model folder (method task-arithmetic needs one), got nothing');
    expect(merge({ out: 'o', models: [{ model: 'a', fisher: 'f', data: { path: 'd', task: 'rte' } }, { model: 'b', fisher: 'g' }] })).toThrow("merge.yaml: models[0]: needs at most one of 'fisher' (a Fisher file) or 'data'");
    expect(merge({ out: 'o', models: [{ model: 'a' }, { model: 'b', fisher: 'g' }] })).toThrow("merge.yaml: models[0]: method mask-fisher needs 'fisher' (a Fisher file) or 'data'");
    expect(merge({ out: 'o', merge_method: 'isotropic', models: two })).toThrow('merge.yaml: models[0].fisher: method isotropic uses no Fisher statistics; leave it out');
    expect(merge({ out: 'o', models: [{ model: 'a', fisher: 'f', lambda: 2 }, { model: 'b', fisher: 'g' }] })).toThrow("merge.yaml: models[0].lambda: renamed to 'parameters.weight'");
    expect(merge({ out: 'o', models: [{ model: 'a', fisher: 'f', parameters: { weight: -1 } }, { model: 'b', fisher: 'g' }] })).toThrow('merge.yaml: models[0]: parameters.weight: expected a number >= 0, got -1');
    expect(merge({ out: 'o', merge_method: 'ties', base_model: 'b', models: [{ model: 'a', parameters: { density: 2 } }, { model: 'b' }] })).toThrow("merge.yaml: (top level): models[0].parameters: parameter 'density' of model 1 of 'ties' must be a number in (0, 1], got 2");
    expect(merge({ out: 'o', merge_method: 'ties', base_model: 'b', models: [{ model: 'a', parameters: { scale: 2 } }, { model: 'b' }] })).toThrow("models[0].parameters: merge method 'ties' has no per-model parameter 'scale' (its per-model parameters: density)");
    expect(merge({ out: 'o', dtype: 'f8', models: two })).toThrow('merge.yaml: dtype: expected one of float32, float16, bfloat16, got "f8"');
  });
});

describe('documented configs', () => {
  it("the stream README's example config is valid", () => {
    const readme = readFileSync(new URL('../../pipelines/stream-job/README.md', import.meta.url), 'utf8');
    const example = /```yaml\n([\s\S]*?)```/.exec(readme)![1]!;
    const c = stream(parse(example))();
    expect(c.tasks.map((t) => [t.name, t.watch ?? t.ipc])).toEqual([['sst2', 'incoming/sst2'], ['rte', '-']]);
  });
});
