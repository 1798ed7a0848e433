import { describe, expect, it } from 'vitest';
import { MERGE_CONFIG, parseConfig, RUN_CONFIG, STREAM_CONFIG } from '@fisher-merge/config';

/** A rule that merges an exact number of models (slerp: two) is checked against every config's groups. */
const runTask = (task: string) => ({ task, model: 'm', train: 't', validation: 'v' });
const streamTask = (task: string) => ({ task, model: 'm', watch: 'w' });
const tasks = ['sst2', 'cola', 'rte'];

describe('configs check the number of models a rule merges', () => {
  it('run: every merge group of a slerp method has two tasks', () => {
    const run = (doc: object) => () => parseConfig(RUN_CONFIG, { tasks: tasks.map(runTask), methods: ['isotropic', { merge_method: 'slerp', label: 'halfway' }], ...doc }, 'run.yaml');
    expect(run({ merges: [['sst2', 'cola'], ['cola', 'rte']] })().merges).toEqual([['sst2', 'cola'], ['cola', 'rte']]);
    expect(run({ merges: [['sst2', 'cola'], ['sst2', 'cola', 'rte']] })).toThrow('run.yaml: merges[1]: expected merges of 2 tasks (method halfway merges exactly 2 models), got 3');
    expect(run({ merges: ['all'] })).toThrow('run.yaml: merges[0]: expected merges of 2 tasks (method halfway merges exactly 2 models), got 3');
    // Without merges the run merges all its tasks.
    expect(run({})).toThrow('run.yaml: merges: expected merges of 2 tasks (method halfway merges exactly 2 models), got 3');
  });

  it('stream: a slerp job has two tasks; merge: a slerp file has two models', () => {
    const stream = (names: string[]) => () => parseConfig(STREAM_CONFIG, { out: 'o', merge_method: 'slerp', tasks: names.map(streamTask) }, 'stream.yaml');
    expect(stream(['sst2', 'cola'])().merge_method).toBe('slerp');
    expect(stream(tasks)).toThrow('stream.yaml: tasks: expected 2 tasks (method slerp merges exactly 2 models), got 3');
    const merge = (models: string[]) => () => parseConfig(MERGE_CONFIG, { out: 'o', merge_method: 'slerp', parameters: { t: 0.25 }, models: models.map((model) => ({ model })) }, 'merge.yaml');
    expect(merge(['a', 'b'])().params).toEqual({ t: 0.25 });
    expect(merge(['a', 'b', 'c'])).toThrow('merge.yaml: models: expected 2 models (method slerp merges exactly 2), got 3');
  });
});
