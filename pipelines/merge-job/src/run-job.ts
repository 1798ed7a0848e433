import { promises as fs } from 'node:fs';
import path from 'node:path';
import { logEvent, Progress, refuseExistingOutput, refuseOutputOnInputs, replaceDir, takeRows, UserError, writeFileAtomic, type TokenBatch } from '@fisher-merge/core';
import { loadTokenizer, sampleIds, writeRowsParquet } from '@fisher-merge/data';
import { evaluateModel, primaryMetric, tokenizeEvalSplit, type EvalResult } from '@fisher-merge/eval/evaluate';
import { readMaskFisher } from '@fisher-merge/fisher';
import { resolveRule, type Params, type Statistic } from '@fisher-merge/merge';
import { describeModel } from '@fisher-merge/model';
import { bestMethods, renderReport, type ModelCardInput, type ResultsTable } from '@fisher-merge/report';
import { mergeModels, writeModelCards, type MergeJobResult } from '@fisher-merge/merge-writer';
import { fitTokenizer, withModelLabels } from '@fisher-merge/task-model';
import { searchCoefficients, type Coefficient } from './coefficient-search.ts';
import type { RunConfig, RunSearch, RunTask } from './run-config.ts';
import { STATISTIC_JOBS, type FisherKind, type FisherTiming } from './statistics.ts';

export interface RunResults {
  config: string;
  engine: string;
  fisher: Record<string, { [K in FisherKind]?: FisherTiming }>;
  individual: Record<string, EvalResult['metrics']>;
  /** merge name -> method -> task -> metrics */
  merges: Record<string, Record<string, Record<string, EvalResult['metrics']>>>;
  mergeSeconds: Record<string, Record<string, number>>;
  /** merge name -> method -> the coefficients a search chose and the held-out scores (mean primary metric) */
  search: Record<string, Record<string, { coefficients: Record<string, number>; heldOut: { defaults: number; chosen: number }; evaluations: number }>>;
  /** merge name -> method (searched ones too) -> the lambdas and parameters it merged with. */
  lambdas: Record<string, Record<string, number[]>>;
  params: Record<string, Record<string, Params>>;
  /** Validation examples scored per task (the reported rows). */
  evalExamples: Record<string, number>;
  /** Where the results tables, the HTML report and the kept merged model folders are. */
  outputs: { tables: string[]; report: string; models: string[] };
}

/** A validation split: the rows every score reports, and (with a search) the held-out rows it chooses on. */
export interface EvalSplit {
  report: TokenBatch[];
  search?: TokenBatch[];
}

/** Rule parameters a search chooses where the rule has them, each from the `search` list of its name. */
const SEARCHED_PARAMS = ['scale', 't'] as const;

/** The label of a method's searched merge, beside the method's own. */
export const searchedLabel = (label: string): string => `${label}+search`;

/** A seeded `holdout` share of the split's examples for the search; the rest are reported. */
export function holdOut(batches: readonly TokenBatch[], search: RunSearch, task: string): EvalSplit {
  const total = batches.reduce((n, b) => n + b.batchSize, 0);
  const n = Math.round(search.holdout * total);
  if (n < 1 || n >= total) throw new UserError(`search.holdout ${search.holdout} of the ${total} validation examples of ${task} leaves no rows to ${n < 1 ? 'search on' : 'report'}`);
  const held = new Set(sampleIds(total, n, search.seed));
  const split: Required<EvalSplit> = { report: [], search: [] };
  let at = 0;
  for (const b of batches) {
    const rows = Array.from({ length: b.batchSize }, (_, i) => i);
    const mine = rows.filter((i) => held.has(at + i));
    const rest = rows.filter((i) => !held.has(at + i));
    if (mine.length > 0) split.search.push(takeRows(b, mine));
    if (rest.length > 0) split.report.push(takeRows(b, rest));
    at += b.batchSize;
  }
  return split;
}

/** The search objective: the mean over the merge's tasks of each task's primary metric. */
function meanPrimary(tasks: readonly RunTask[], scores: Record<string, EvalResult['metrics']>): number {
  return tasks.reduce((sum, t) => sum + scores[t.name]![primaryMetric(t.spec)]!, 0) / tasks.length;
}

export const mergeName = (group: readonly string[]): string => group.join('_');

/** The method with the best mean primary metric (NaN scores lose). */
const bestScored = (scored: { label: string; score: number }[]): string => scored.reduce((a, b) => (b.score > a.score || Number.isNaN(a.score) ? b : a)).label;

/**
 * The whole job of a run config: Fisher of every task model (mask nodes and/or full, as the methods
 * need), every merge group by every method, evaluation of each task's own model and of every merged
 * model, a results table (results.md, results.json, results.parquet) and report.html under the
 * output folder. Merged folders are built in a hidden scratch folder, given model cards with their
 * scores, and moved to merges/<merge>/<method> only as `save_models` asks.
 */
export async function runJob(config: RunConfig): Promise<RunResults> {
  const out = config.output;
  refuseOutputOnInputs({ what: `${config.file}: out`, path: out }, [
    { what: 'config file', path: config.file },
    ...config.tasks.flatMap((t, i) => [
      { what: `tasks[${i}].model`, path: t.model },
      { what: `tasks[${i}].train`, path: t.train },
      ...(t.validation ? [{ what: `tasks[${i}].validation`, path: t.validation }] : []),
    ]),
    ...(config.base ? [{ what: 'base_model', path: config.base }] : []),
  ]);
  // Each result file (and kept folder) is replaced only once it is complete; an earlier run's out is kept unless asked.
  refuseExistingOutput({ what: `${config.file}: out`, path: out }, { kind: 'folder', overwrite: config.overwrite, how: "'overwrite: true' (or --overwrite)" });
  const needed = [...new Set(config.methods.flatMap((m) => resolveRule(m.rule).needs.stats))];
  const files = ['results.md', 'results.json', 'results.parquet', 'report.html'].map((f) => path.join(out, f));
  const results: RunResults = {
    config: config.file, engine: config.engine, fisher: {}, individual: {}, merges: {}, mergeSeconds: {}, search: {}, lambdas: {}, params: {}, evalExamples: {},
    outputs: { tables: files.slice(0, 3), report: files[3]!, models: [] },
  };
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

  const splits = new Map<string, EvalSplit>();
  /** A task's validation split, tokenized once; with a search, its held-out rows apart from the reported ones. */
  const splitOf = async (task: RunTask): Promise<EvalSplit> => {
    if (!splits.has(task.name)) {
      // Headers only: the split needs the model's pad id, not its weights.
      const [tokenizer, model] = await Promise.all([loadTokenizer(task.model), describeModel(task.model)]);
      const opts = { data: task.validation!, task: withModelLabels(task.spec, model.hfConfig, task.model), batchSize: config.evaluation!.batchSize, maxLength: config.maxLength, ...optional(config.evaluation!) };
      const batches = await tokenizeEvalSplit(opts, fitTokenizer(task.model, tokenizer, model.config, config.maxLength), model.config.padTokenId);
      splits.set(task.name, config.search ? holdOut(batches, config.search, task.name) : { report: batches });
    }
    return splits.get(task.name)!;
  };
  /** `label` names the model in the progress lines: `own model`, or the merge and method. */
  const evaluate = async (modelDir: string, task: RunTask, label: string, part: keyof EvalSplit = 'report') => {
    if (!config.evaluation) return undefined;
    const batches = (await splitOf(task))[part]!;
    const r = await evaluateModel({ modelDir, data: task.validation!, task: task.spec, engine: config.engine, batches, progressLabel: `eval ${task.name} (${label}${part === 'search' ? ', held out' : ''})` });
    logEvent('eval', { model: modelDir, task: task.name, rows: part, examples: r.examples, ...r.metrics });
    if (part === 'report') results.evalExamples[task.name] = r.examples;
    return r.metrics;
  };
  const scoresOf = async (outputs: Record<string, string>, tasks: readonly RunTask[], label: string, part: keyof EvalSplit = 'report') => {
    const scores: Record<string, EvalResult['metrics']> = {};
    for (const task of tasks) {
      const metrics = await evaluate(outputs[path.basename(path.resolve(task.model))]!, task, label, part);
      if (metrics) scores[task.name] = metrics;
    }
    return scores;
  };

  for (const task of config.tasks) {
    const metrics = await evaluate(task.model, task, 'own model');
    if (metrics) results.individual[task.name] = metrics;
  }
  // Under out/ so that kept folders are renamed into place, not copied.
  const scratch = path.join(out, `.merging-${process.pid}`);
  const writer = `\`fisher-merge run\` (${path.basename(config.file)})`;
  const merges = new Progress({ label: 'merges', unit: 'merges', total: config.merges.length * config.methods.length });
  try {
    for (const group of config.merges) await mergeGroup(group);
  } finally {
    await fs.rm(scratch, { recursive: true, force: true });
  }
  merges.finish();
  async function mergeGroup(group: string[]): Promise<void> {
    const name = mergeName(group);
    const tasks = group.map((t) => byName.get(t)!);
    results.merges[name] = {};
    results.mergeSeconds[name] = {};
    results.lambdas[name] = {};
    results.params[name] = {};
    const scored: { label: string; dir: string; score: number }[] = [];
    const settle = async (label: string, dir: string, keep: boolean) => {
      const target = path.join(out, 'merges', name, label);
      if (keep) {
        await replaceDir(dir, target);
        results.outputs.models.push(target);
      } else {
        await fs.rm(dir, { recursive: true, force: true });
        await fs.rm(target, { recursive: true, force: true }); // an earlier run's folder is not this run's result
      }
    };
    /** Scores a merged folder on the reported rows, writes its model cards, and keeps it as save_models says. */
    const record = async (label: string, dir: string, merged: MergeJobResult) => {
      results.lambdas[name]![label] = merged.provenance.lambdas;
      results.params[name]![label] = merged.provenance.params as Params;
      const scores = results.merges[name]![label] = await scoresOf(merged.outputs.models, tasks, `${name} ${label}`);
      if (config.evaluation) {
        const cards: Record<string, ModelCardInput['evaluation']> = {};
        for (const t of tasks) cards[path.basename(path.resolve(t.model))] = [{ task: t.name, examples: results.evalExamples[t.name]!, metrics: scores[t.name]! }];
        await writeModelCards(merged, writer, cards);
      }
      scored.push({ label, dir, score: config.evaluation ? meanPrimary(tasks, scores) : NaN });
      // Only 'best' has to wait for the other methods; the rest settle now, so scratch holds one merge.
      if (config.saveModels !== 'best') await settle(label, dir, config.saveModels === 'all');
    };
    for (const method of config.methods) {
      const rule = resolveRule(method.rule);
      const merge = (dir: string, coefficients: Record<string, number> = {}) => mergeModels({
        models: tasks.map((t) => t.model),
        statistics: Object.fromEntries(rule.needs.stats.map((kind) => [kind, tasks.map((t) => fisherFile(t.name, kind))])),
        method: method.rule,
        params: { ...method.params, ...Object.fromEntries(SEARCHED_PARAMS.flatMap((p) => (coefficients[p] !== undefined ? [[p, coefficients[p]]] : []))) },
        ...(Object.keys(coefficients).some((c) => c.startsWith('weight.')) ? { lambdas: tasks.map((t) => coefficients[`weight.${t.name}`] ?? 1) } : {}),
        ...(config.base ? { base: config.base } : {}),
        out: dir,
        // Scratch folders are this run's own (a search's trials reuse one).
        overwrite: true,
        writer,
      });
      const dir = path.join(scratch, name, method.label);
      const merged = await merge(dir);
      results.mergeSeconds[name]![method.label] = merged.seconds;
      logEvent('merge', { merge: name, method: method.label, seconds: Number(merged.seconds.toFixed(3)) });
      await record(method.label, dir, merged);
      merges.add(1);

      const search = config.search;
      if (!search?.methods.includes(method.label)) continue;
      // The rule's own coefficient first (scale or t): with a small budget it is the one that moves the merge most.
      const coefficients: Coefficient[] = [
        ...SEARCHED_PARAMS.filter((name) => rule.params.some((p) => p.name === name)).map((name) => ({ name, values: search[name], start: Number(method.params[name]) })),
        ...(rule.weighted === false ? [] : tasks.map((t) => ({ name: `weight.${t.name}`, values: search.weights, start: 1 }))),
      ];
      const trials = path.join(scratch, 'search');
      const found = await searchCoefficients(coefficients, search, async (point) => {
        const trial = await merge(trials, point);
        return meanPrimary(tasks, await scoresOf(trial.outputs.models, tasks, `${name} ${method.label} trial`, 'search'));
      });
      await fs.rm(trials, { recursive: true, force: true });
      const label = searchedLabel(method.label);
      // When the defaults won, the searched merge is the default one: its scores (and folder, if kept) stand.
      if (coefficients.every((c) => found.best[c.name] === c.start)) {
        results.merges[name]![label] = results.merges[name]![method.label]!;
        results.lambdas[name]![label] = results.lambdas[name]![method.label]!;
        results.params[name]![label] = results.params[name]![method.label]!;
      } else {
        const chosenDir = path.join(scratch, name, label);
        await record(label, chosenDir, await merge(chosenDir, found.best));
      }
      (results.search[name] ??= {})[method.label] = { coefficients: found.best, heldOut: { defaults: found.startScore, chosen: found.bestScore }, evaluations: found.evaluations };
      logEvent('search', { merge: name, method: method.label, ...found });
    }
    if (config.saveModels === 'best') {
      const best = bestScored(scored);
      for (const { label, dir } of scored) await settle(label, dir, label === best);
    }
    await fs.rmdir(path.join(out, 'merges', name)).catch(() => undefined);
  }
  await fs.rmdir(path.join(out, 'merges')).catch(() => undefined);

  await fs.mkdir(out, { recursive: true });
  await writeFileAtomic(path.join(out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFileAtomic(path.join(out, 'results.md'), resultsMarkdown(config, results));
  await writeRowsParquet(path.join(out, 'results.parquet'), resultRows(results), RESULT_ROWS_SCHEMA);
  const maskFishers = Object.entries(results.fisher).flatMap(([task, f]) => (f.mask ? [{ task, file: f.mask.file }] : []));
  await writeFileAtomic(results.outputs.report, renderReport({
    title: `fisher-merge results (${path.basename(config.file)})`,
    facts: { config: config.file, engine: results.engine, 'merged models kept': `${results.outputs.models.length} (save_models: ${config.saveModels})` },
    ...(config.evaluation ? { results: resultTable(config, results) } : {}),
    fishers: await Promise.all(maskFishers.map(async ({ task, file }) => ({ ...(await readMaskFisher(file)), task, source: file }))),
  }));
  return results;
}

const RESULT_ROWS_SCHEMA = {
  merge: { type: 'UTF8', optional: true },
  method: { type: 'UTF8' },
  task: { type: 'UTF8' },
  metric: { type: 'UTF8' },
  value: { type: 'DOUBLE' },
  examples: { type: 'INT64' },
  lambdas: { type: 'DOUBLE', list: true, optional: true },
  params: { type: 'UTF8', optional: true },
  merge_seconds: { type: 'DOUBLE', optional: true },
} as const;

/**
 * One row per score, for data platforms that read results as a table. Own models have no merge:
 * merge, lambdas, params and merge_seconds are NULL; params is the merge's parameters as JSON.
 */
function* resultRows(results: RunResults): Generator<Record<string, unknown>> {
  for (const [task, metrics] of Object.entries(results.individual)) {
    for (const [metric, value] of Object.entries(metrics)) {
      yield { merge: null, method: 'own', task, metric, value, examples: results.evalExamples[task], lambdas: null, params: null, merge_seconds: null };
    }
  }
  for (const [merge, methods] of Object.entries(results.merges)) {
    for (const [method, tasks] of Object.entries(methods)) {
      const merged = { lambdas: results.lambdas[merge]![method], params: JSON.stringify(results.params[merge]![method]), merge_seconds: results.mergeSeconds[merge]![method] ?? null };
      for (const [task, metrics] of Object.entries(tasks)) {
        for (const [metric, value] of Object.entries(metrics)) yield { merge, method, task, metric, value, examples: results.evalExamples[task], ...merged };
      }
    }
  }
}

function optional<T extends { samples?: number; seed?: number; limit?: number }>(o: T): Partial<Pick<T, 'samples' | 'seed' | 'limit'>> {
  return Object.fromEntries(Object.entries({ samples: o.samples, seed: o.seed, limit: o.limit }).filter(([, v]) => v !== undefined));
}

const fmt = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4));

/** Each merge x task with its primary metric: the task's own model and every method's merged model (a searched method's column follows its own). */
export function resultTable(config: RunConfig, results: RunResults): ResultsTable {
  const methods = config.methods.flatMap((m) => (config.search?.methods.includes(m.label) ? [m.label, searchedLabel(m.label)] : [m.label]));
  const rows = config.merges.flatMap((group) => group.map((taskName) => {
    const [name, metric] = [mergeName(group), primaryMetric(config.tasks.find((t) => t.name === taskName)!.spec)];
    const own = results.individual[taskName]?.[metric];
    return { merge: name, task: taskName, metric, ...(own !== undefined ? { own } : {}), scores: methods.map((m) => results.merges[name]?.[m]?.[taskName]?.[metric]) };
  }));
  return { methods, rows };
}

/** The results table: each merge x task x method, each task's own model, and the time each Fisher took. */
export function resultsMarkdown(config: RunConfig, results: RunResults): string {
  const lines = [`# fisher-merge results (${path.basename(config.file)})`, ''];
  if (config.evaluation) {
    if (config.search) lines.push(`Scores on the validation rows left after holding out ${config.search.holdout} of each split (seed ${config.search.seed}) for the coefficient search.`, '');
    const { methods, rows } = resultTable(config, results);
    lines.push(`| merge | task | metric | own model | ${methods.join(' | ')} | best |`, `|---|---|---|---|${methods.map(() => '---|').join('')}---|`);
    for (const row of rows) {
      const best = bestMethods(row).map((i) => methods[i]).join(', ');
      lines.push(`| ${row.merge} | ${row.task} | ${row.metric} | ${fmt(row.own)} | ${row.scores.map(fmt).join(' | ')} | ${best || '-'} |`);
    }
    lines.push('');
  }
  const searched = Object.entries(results.search).flatMap(([merge, byMethod]) => Object.entries(byMethod).map(([method, s]) => ({ merge, method, ...s })));
  if (searched.length > 0) {
    lines.push(
      `Coefficient search (${config.search!.strategy}, at most ${config.search!.budget} evaluations; held-out score = mean primary metric of the merge's tasks):`, '',
      '| merge | method | chosen coefficients | held-out: defaults | held-out: chosen | evaluations |',
      '|---|---|---|---|---|---|',
    );
    for (const s of searched) {
      const chosen = Object.entries(s.coefficients).map(([k, v]) => `${k}=${v}`).join(', ');
      lines.push(`| ${s.merge} | ${s.method} | ${chosen} | ${fmt(s.heldOut.defaults)} | ${fmt(s.heldOut.chosen)} | ${s.evaluations} |`);
    }
    lines.push('');
  }
  const timed = Object.entries(results.fisher).filter(([, f]) => f.mask || f.full || f.gram);
  if (timed.length > 0) {
    lines.push(
      `Fisher computation (engine ${results.engine}):`, '',
      '| task | mask Fisher: examples | seconds | examples/s | full Fisher: examples | seconds | examples/s | full / mask time per example | Gram (RegMean): examples | seconds | examples/s |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const [task, f] of timed) {
      const rate = (t?: FisherTiming) => (t && t.seconds > 0 ? t.examples / t.seconds : undefined);
      const ratio = rate(f.mask) && rate(f.full) ? `${(rate(f.mask)! / rate(f.full)!).toFixed(1)}x` : '-';
      const cell = (t?: FisherTiming) => (t ? `${t.examples} | ${t.seconds.toFixed(2)} | ${rate(t)!.toFixed(1)}` : '- | - | -');
      lines.push(`| ${task} | ${cell(f.mask)} | ${cell(f.full)} | ${ratio} | ${cell(f.gram)} |`);
    }
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}
