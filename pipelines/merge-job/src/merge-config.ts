import path from 'node:path';
import { loadConfig, MERGE_CONFIG, parseConfig } from '@fisher-merge/config';
import { OUTPUT_DTYPES, type OutputDType } from '@fisher-merge/checkpoint';
import { refuseExistingOutput, refuseOutputOnInputs, UserError } from '@fisher-merge/core';
import { resolveRule, type Params, type Statistic } from '@fisher-merge/merge';
import { mergeModels, type MergeJobOptions, type MergeJobResult } from '@fisher-merge/merge-writer';
import { sampling, STATISTIC_JOBS, statisticSettings, type StatisticSettings, type StatisticSource } from './statistics.ts';
import { withModelLabelCount } from '@fisher-merge/task-model';

/** `fisher-merge merge CONFIG.yaml`: one merge in one file (mergekit's vocabulary). Paths are relative to the file. */
export interface MergeConfig extends StatisticSettings {
  file: string;
  method: string;
  params: Params;
  base?: string;
  out: string;
  /** Replace an `out` that exists and is not empty (`overwrite: true`, `--overwrite`). */
  overwrite: boolean;
  /** Default: the inputs' dtype where they agree, else float32. */
  dtype?: OutputDType;
  models: {
    dir: string;
    weight: number;
    params: Params;
    /** A Fisher file, or the examples to compute the method's statistics from. */
    fisher?: string;
    data?: StatisticSource;
  }[];
}

export async function readMergeConfig(file: string): Promise<MergeConfig> {
  const c = await loadConfig(MERGE_CONFIG, file);
  const models = await Promise.all(c.models.map(async (m) => (m.data ? { ...m, data: await withModelLabelCount(m.data, path.resolve(path.dirname(file), m.model)) } : m)));
  return mergeConfig(file, { ...c, models });
}

/** A merge config from a parsed document; custom tasks without `num_labels` keep the default of 2 (readMergeConfig reads it from the model). */
export function parseMergeConfig(file: string, doc: unknown): MergeConfig {
  return mergeConfig(file, parseConfig(MERGE_CONFIG, doc, file));
}

function mergeConfig(file: string, c: ReturnType<typeof MERGE_CONFIG.parse>): MergeConfig {
  const resolve = (p: string): string => path.resolve(path.dirname(file), p);
  return {
    file,
    method: c.rule,
    params: c.params,
    ...(c.base_model !== undefined ? { base: resolve(c.base_model) } : {}),
    out: resolve(c.out),
    overwrite: c.overwrite,
    ...(c.dtype !== undefined ? { dtype: OUTPUT_DTYPES.get(c.dtype)! } : {}),
    ...statisticSettings(c),
    models: c.models.map((m, j) => ({
      dir: resolve(m.model),
      weight: m.weight,
      params: c.modelParams[j]!,
      ...(m.fisher !== undefined ? { fisher: resolve(m.fisher) } : {}),
      ...(m.data !== undefined
        ? { data: { name: path.basename(resolve(m.model)), model: resolve(m.model), data: resolve(m.data.path), spec: m.data.spec, ...sampling(m.data) } }
        : {}),
    })),
  };
}

/**
 * Runs one merge config: statistics of models given `data` are computed first, into `OUT.fisher/`
 * beside the output (kept: they are additive and reusable as `fisher:` files), then the merge.
 */
export async function runMergeConfig(config: MergeConfig): Promise<MergeJobResult> {
  const rule = resolveRule(config.method);
  // Before any statistic is computed: the config file and every input are safe from `out`, and an old output is kept unless asked.
  const out = { what: `${config.file}: out`, path: config.out };
  refuseOutputOnInputs(out, [
    { what: 'config file', path: config.file },
    ...(config.base ? [{ what: 'base_model', path: config.base }] : []),
    ...config.models.flatMap((m, j) => [
      { what: `models[${j}].model`, path: m.dir },
      ...(m.fisher !== undefined ? [{ what: `models[${j}].fisher`, path: m.fisher }] : []),
      ...(m.data ? [{ what: `models[${j}].data.path`, path: m.data.data }] : []),
    ]),
  ]);
  refuseExistingOutput(out, { kind: 'folder', overwrite: config.overwrite, how: "'overwrite: true' (or --overwrite)" });
  const statistics: { [K in Statistic]?: string[] } = {};
  for (const kind of rule.needs.stats) {
    statistics[kind] = [];
    for (const [j, m] of config.models.entries()) {
      if (m.fisher !== undefined) {
        if (rule.needs.stats.length > 1) throw new UserError(`${config.file}: models[${j}].fisher: method ${rule.name} needs several kinds of statistics; give 'data' to compute them`);
        statistics[kind].push(m.fisher);
        continue;
      }
      const file = path.join(`${config.out}.fisher`, `${path.basename(m.dir)}.${STATISTIC_JOBS[kind].kind}.safetensors`);
      await STATISTIC_JOBS[kind].compute(config, m.data!, file);
      statistics[kind].push(file);
    }
  }
  const job: MergeJobOptions = {
    models: config.models.map((m) => m.dir),
    statistics,
    method: rule.name,
    params: config.params,
    modelParams: config.models.map((m) => m.params),
    lambdas: config.models.map((m) => m.weight),
    ...(config.base ? { base: config.base } : {}),
    ...(config.dtype ? { dtype: config.dtype } : {}),
    out: config.out,
    overwrite: config.overwrite,
    progressLabel: 'merge',
  };
  return mergeModels(job);
}
