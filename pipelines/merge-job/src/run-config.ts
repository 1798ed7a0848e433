import path from 'node:path';
import { loadConfig, parseConfig, RUN_CONFIG, type RunConfigKeys } from '@fisher-merge/config';
import type { TaskSpec } from '@fisher-merge/data';
import type { EngineKind } from '@fisher-merge/engines';
import type { FisherMode } from '@fisher-merge/fisher';
import type { Params } from '@fisher-merge/merge';
import type { SearchStrategy } from './coefficient-search.ts';
import { statisticSettings } from './statistics.ts';
import { withModelLabelCount } from '@fisher-merge/task-model';

/** One fine-tuned model and its task's data. Paths are resolved against the config file's folder. */
export interface RunTask {
  name: string;
  spec: TaskSpec;
  model: string;
  train: string;
  validation?: string;
}

export interface RunConfig {
  file: string;
  output: string;
  /** Replace an output folder that exists and is not empty (`overwrite: true`, `--overwrite`). */
  overwrite: boolean;
  engine: EngineKind;
  maxLength: number;
  tasks: RunTask[];
  fisher: { samples?: number; seed?: number; batchSize: number; mode: FisherMode };
  fullFisher: { samples?: number; seed?: number; batchSize: number; mode: 'empirical' | 'expected'; loop: 'batched' | 'classic' };
  /** Input Gram statistics (RegMean): examples and batch size (sums exclude padding, so batching changes only the cost). */
  gram: { samples?: number; seed?: number; batchSize: number };
  /** `label` names the method's results and output folder (default: the rule's name). */
  methods: { label: string; rule: string; params: Params }[];
  base?: string;
  /** Groups of task names, each merged into one model. */
  merges: string[][];
  evaluation: { limit?: number; batchSize: number } | undefined;
  search?: RunSearch;
  /** Merged model folders kept under output/merges: every one, each merge's best method, or none (scores only). */
  saveModels: SaveModels;
}

/** Coefficient search on a held-out share of each validation split (see `searchCoefficients`). */
export interface RunSearch {
  holdout: number;
  seed: number;
  strategy: SearchStrategy;
  budget: number;
  weights: number[];
  scale: number[];
  t: number[];
  /** Labels of the methods searched. */
  methods: string[];
}

export type SaveModels = RunConfigKeys['save_models'];

/** Reads a run config (the shared vocabulary of libs/config; see data/demo.yaml for every key). */
export async function readRunConfig(file: string): Promise<RunConfig> {
  const c = await loadConfig(RUN_CONFIG, file);
  const tasks = await Promise.all(c.tasks.map((t) => withModelLabelCount(t, path.resolve(path.dirname(file), t.model))));
  return runConfig(file, { ...c, tasks });
}

/** A run config from a parsed document; custom tasks without `num_labels` keep the default of 2 (readRunConfig reads it from the model). */
export function parseRunConfig(file: string, doc: unknown): RunConfig {
  return runConfig(file, parseConfig(RUN_CONFIG, doc, file));
}

function runConfig(file: string, c: RunConfigKeys): RunConfig {
  const resolve = (p: string): string => path.resolve(path.dirname(file), p);
  return {
    file,
    output: resolve(c.out),
    overwrite: c.overwrite,
    ...statisticSettings(c),
    tasks: c.tasks.map((t) => ({
      name: t.name,
      spec: t.spec,
      model: resolve(t.model),
      train: resolve(t.train),
      ...(t.validation !== undefined ? { validation: resolve(t.validation) } : {}),
    })),
    methods: c.methods,
    ...(c.base_model !== undefined ? { base: resolve(c.base_model) } : {}),
    merges: c.merges,
    ...(c.search ? { search: { ...c.search, methods: c.search.methods ?? c.methods.map((m) => m.label) } } : {}),
    saveModels: c.save_models,
    evaluation: c.evaluation && { batchSize: c.evaluation.batch_size, ...(c.evaluation.limit !== undefined ? { limit: c.evaluation.limit } : {}) },
  };
}
