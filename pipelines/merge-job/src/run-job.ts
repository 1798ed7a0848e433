import { promises as fs } from 'node:fs';
import path from 'node:path';
import { logEvent, writeFileAtomic, type TokenBatch } from '@fisher-merge/core';
import { loadTokenizer, writeRowsParquet } from '@fisher-merge/data';
import { PRIMARY_METRIC } from '@fisher-merge/eval';
import { resolveRule, type Statistic } from '@fisher-merge/merge';
import { describeModel } from '@fisher-merge/model';
import { evaluateModel, metricsFor, tokenizeEvalSplit, type EvalResult } from './eval-job.ts';
import { mergeModels } from './merge-job.ts';
import { fitTokenizer } from './task-model.ts';
import type { RunConfig, RunTask } from './run-config.ts';
import { STATISTIC_JOBS, type FisherKind, type FisherTiming } from './statistics.ts';

export interface RunResults {
  config: string;
  engine: string;
  fisher: Record<string, { [K in FisherKind]?: FisherTiming }>;
  individual: Record<string, EvalResult['metrics']>;
  /** merge name -> method -> task -> metrics */
  merges: Record<string, Record<string, Record<string, EvalResult['metrics']>>>;
  mergeSeconds: Record<string, Record<string, number>>;
}

export const mergeName = (group: readonly string[]): string => group.join('_');

/**
 * The whole job of a run config: Fisher of every task model (mask nodes and/or full, as the methods
 * need), every merge group by every method, evaluation of each task's own model and of every merged
 * model, and a results table (results.md, results.json, results.parquet) under the output folder.
 */
export async function runJob(config: RunConfig): Promise<RunResults> {
  const out = config.output;
  const needed = [...new Set(config.methods.flatMap((m) => resolveRule(m.rule).needs.stats))];
  const results: RunResults = { config: config.file, engine: config.engine, fisher: {}, individual: {}, merges: {}, mergeSeconds: {} };
  const byName = new Map(config.tasks.map((t) => [t.name, t]));
  const fisherFile = (task: string, kind: Statistic) => path.join(out, 'fisher', `${task}.${STATISTIC_JOBS[kind].kind}.safetensors`);

  for (const task of config.tasks) {
    results.fisher[task.name] = {};
    for (const kind of needed) {
      const { engine, ...timing } = await STATISTIC_JOBS[kind].compute(config, { ...task, data: task.train }, fisherFile(task.name, kind));
      results.fisher[task.name]![STATISTIC_JOBS[kind].kind] = timing;
      results.engine = engine;
    }
  }

  const splits = new Map<string, TokenBatch[]>();
  const evaluate = async (modelDir: string, task: RunTask) => {
    if (!config.evaluation) return undefined;
    if (!splits.has(task.name)) {
      // Headers only: the split needs the model's pad id, not its weights.
      const [tokenizer, model] = await Promise.all([loadTokenizer(task.model), describeModel(task.model)]);
      const opts = { data: task.validation!, task: task.spec, batchSize: config.evaluation.batchSize, maxLength: config.maxLength, ...optional(config.evaluation) };
      splits.set(task.name, await tokenizeEvalSplit(opts, fitTokenizer(task.model, tokenizer, model.config, config.maxLength), model.config.padTokenId));
    }
    const r = await evaluateModel({ modelDir, data: task.validation!, task: task.spec, engine: config.engine, batches: splits.get(task.name)! });
    logEvent('eval', { model: modelDir, task: task.name, examples: r.examples, ...r.metrics });
    return r.metrics;
  };

  for (const task of config.tasks) {
    const metrics = await evaluate(task.model, task);
    if (metrics) results.individual[task.name] = metrics;
  }
  for (const group of config.merges) {
    const name = mergeName(group);
    results.merges[name] = {};
    results.mergeSeconds[name] = {};
    for (const method of config.methods) {
      const rule = resolveRule(method.rule);
      const tasks = group.map((t) => byName.get(t)!);
      const dir = path.join(out, 'merges', name, method.label);
      const merged = await mergeModels({
        models: tasks.map((t) => t.model),
        statistics: Object.fromEntries(rule.needs.stats.map((kind) => [kind, tasks.map((t) => fisherFile(t.name, kind))])),
        method: method.rule,
        params: method.params,
        ...(config.base ? { base: config.base } : {}),
        out: dir,
      });
      results.mergeSeconds[name]![method.label] = merged.seconds;
      logEvent('merge', { merge: name, method: method.label, out: dir, seconds: Number(merged.seconds.toFixed(3)) });
      const scores: Record<string, EvalResult['metrics']> = {};
      for (const task of tasks) {
        const metrics = await evaluate(merged.outputs.models[path.basename(path.resolve(task.model))]!, task);
        if (metrics) scores[task.name] = metrics;
      }
      results.merges[name]![method.label] = scores;
    }
  }

  await fs.mkdir(out, { recursive: true });
  await writeFileAtomic(path.join(out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFileAtomic(path.join(out, 'results.md'), resultsMarkdown(config, results));
  await writeRowsParquet(path.join(out, 'results.parquet'), resultRows(results), RESULT_ROWS_SCHEMA);
  return results;
}

const RESULT_ROWS_SCHEMA = {
  merge: { type: 'UTF8' },
  method: { type: 'UTF8' },
  task: { type: 'UTF8' },
  metric: { type: 'UTF8' },
  value: { type: 'DOUBLE' },
} as const;

/** One row per score, for data platforms that read results as a table (own models: merge '', method 'own'). */
function* resultRows(results: RunResults): Generator<Record<string, string | number>> {
  for (const [task, metrics] of Object.entries(results.individual)) {
    for (const [metric, value] of Object.entries(metrics)) yield { merge: '', method: 'own', task, metric, value };
  }
  for (const [merge, methods] of Object.entries(results.merges)) {
    for (const [method, tasks] of Object.entries(methods)) {
      for (const [task, metrics] of Object.entries(tasks)) {
        for (const [metric, value] of Object.entries(metrics)) yield { merge, method, task, metric, value };
      }
    }
  }
}

function optional<T extends { samples?: number; seed?: number; limit?: number }>(o: T): Partial<Pick<T, 'samples' | 'seed' | 'limit'>> {
  return Object.fromEntries(Object.entries({ samples: o.samples, seed: o.seed, limit: o.limit }).filter(([, v]) => v !== undefined));
}

const fmt = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4));

/** The results table: each merge x task x method, each task's own model, and the time each Fisher took. */
export function resultsMarkdown(config: RunConfig, results: RunResults): string {
  const methods = config.methods.map((m) => m.label);
  const metricOf = (task: RunTask) => PRIMARY_METRIC[task.name] ?? metricsFor(task.spec).at(-1)!;
  const lines = [`# fisher-merge results (${path.basename(config.file)})`, ''];
  if (config.evaluation) {
    lines.push(`| merge | task | metric | own model | ${methods.join(' | ')} |`, `|---|---|---|---|${methods.map(() => '---|').join('')}`);
    for (const group of config.merges) {
      const name = mergeName(group);
      for (const taskName of group) {
        const task = config.tasks.find((t) => t.name === taskName)!;
        const metric = metricOf(task);
        const cells = methods.map((m) => fmt(results.merges[name]?.[m]?.[taskName]?.[metric]));
        lines.push(`| ${name} | ${taskName} | ${metric} | ${fmt(results.individual[taskName]?.[metric])} | ${cells.join(' | ')} |`);
      }
    }
    lines.push('');
  }
  const timed = Object.entries(results.fisher).filter(([, f]) => f.mask || f.full);
  if (timed.length > 0) {
    lines.push(
      `Fisher computation (engine ${results.engine}):`, '',
      '| task | mask Fisher: examples | seconds | examples/s | full Fisher: examples | seconds | examples/s | full / mask time per example |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const [task, f] of timed) {
      const rate = (t?: FisherTiming) => (t && t.seconds > 0 ? t.examples / t.seconds : undefined);
      const ratio = rate(f.mask) && rate(f.full) ? `${(rate(f.mask)! / rate(f.full)!).toFixed(1)}x` : '-';
      const cell = (t?: FisherTiming) => (t ? `${t.examples} | ${t.seconds.toFixed(2)} | ${rate(t)!.toFixed(1)}` : '- | - | -');
      lines.push(`| ${task} | ${cell(f.mask)} | ${cell(f.full)} | ${ratio} |`);
    }
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}
