import { concatMap, from, identity, lastValueFrom, map, toArray, type Observable } from 'rxjs';
import { reportProgress, runInThread, threadModule, type TokenBatch } from '@fisher-merge/core';
import { GLUE_METRICS, PRIMARY_METRIC, computeMetrics, type MetricName } from './metrics.ts';
import { expectedRows, FlowControl, releaseCredits, taskBatches, type TaskSpec, type TextTokenizer } from '@fisher-merge/data';
import { openEngine, type EngineKind } from '@fisher-merge/engines';
import { loadEncoder, type Engine, type LoadedModel } from '@fisher-merge/model';
import { checkTaskHead, loadTaskModel } from '@fisher-merge/task-model';

export interface EvalDataOptions {
  data: string;
  task: TaskSpec;
  limit?: number;
  batchSize?: number;
  maxLength?: number;
}

export interface EvalJobOptions extends EvalDataOptions {
  modelDir: string;
  engine: EngineKind;
  /** Engine threads (default: every core). */
  threads?: number;
  /** Already tokenized batches of `data` (a job scoring many models on one split tokenizes it once). */
  batches?: readonly TokenBatch[];
  /** Progress meter label; none when undefined. */
  progressLabel?: string;
}

export interface EvalResult {
  task: string;
  examples: number;
  metrics: Record<string, number>;
}

/** GLUE's metrics for a GLUE task; accuracy or Pearson/Spearman for a custom one. */
export function metricsFor(task: TaskSpec): MetricName[] {
  return GLUE_METRICS[task.name] ?? (task.labelKind === 'regression' ? ['pearson', 'spearmanr'] : ['accuracy']);
}

/** The one metric a task is judged by: GLUE's headline (PRIMARY_METRIC); Spearman for a custom regression, accuracy for a custom classification. */
export function primaryMetric(task: TaskSpec): MetricName {
  return PRIMARY_METRIC[task.name] ?? metricsFor(task).at(-1)!;
}

/** A labelled split as padded batches, streamed with bounded read-ahead (each batch handed on once consumed). */
function evalBatches(opts: EvalDataOptions, tokenizer: TextTokenizer, padTokenId: number): Observable<TokenBatch> {
  const flow = new FlowControl(4, { grow: true });
  return taskBatches(opts.data, {
    task: opts.task,
    tokenizer,
    batchSize: opts.batchSize ?? 64,
    padTokenId,
    flow,
    ...(opts.limit ? { sample: { kind: 'first' as const, n: opts.limit } } : {}),
    ...(opts.maxLength ? { maxLength: opts.maxLength } : {}),
  }).pipe(
    releaseCredits(flow),
    map(({ tokens }) => tokens),
  );
}

/** Tokenizes a split once, for scoring several models on it. */
export async function tokenizeEvalSplit(opts: EvalDataOptions, tokenizer: TextTokenizer, padTokenId: number): Promise<TokenBatch[]> {
  return lastValueFrom(evalBatches(opts, tokenizer, padTokenId).pipe(toArray()));
}

async function score(engine: Engine, batches: Observable<TokenBatch>, task: TaskSpec, progress: { label: string; total?: number } | undefined): Promise<EvalResult> {
  const parts = await lastValueFrom(batches.pipe(
    concatMap(async (tokens) => ({ logits: await engine.forward(tokens), labels: tokens.labels! })),
    progress ? reportProgress(progress, (p) => p.labels.length) : identity,
    toArray(),
  ));
  const C = engine.config.numLabels;
  const examples = parts.reduce((n, p) => n + p.labels.length, 0);
  const logits = new Float32Array(examples * C);
  const labels = new Float64Array(examples);
  let at = 0;
  for (const p of parts) {
    logits.set(p.logits, at * C);
    labels.set(p.labels, at);
    at += p.labels.length;
  }
  return { task: task.name, examples, metrics: computeMetrics(metricsFor(task), logits, C, labels) };
}

/** Runs a fine-tuned model over a labelled split and scores its predictions. */
export async function evaluateModel(opts: EvalJobOptions): Promise<EvalResult> {
  // Given tokenized batches, only the model is loaded (no tokenizer).
  if (opts.batches) {
    const model = await loadEncoder(opts.modelDir);
    checkTaskHead(opts.modelDir, model.config, opts.task);
    return scoreModel(opts, model, from(opts.batches));
  }
  const { model, tokenizer, task } = await loadTaskModel(opts.modelDir, opts.task, { ...(opts.maxLength ? { maxLength: opts.maxLength } : {}) });
  return scoreModel(opts, model, evalBatches({ ...opts, task }, tokenizer, model.config.padTokenId));
}

async function scoreModel(opts: EvalJobOptions, model: LoadedModel, batches: Observable<TokenBatch>): Promise<EvalResult> {
  const engine = await openEngine(opts.engine, model.weights, { log: () => {}, threads: opts.threads });
  try {
    const total = opts.batches ? opts.batches.reduce((n, b) => n + b.batchSize, 0) : await expectedRows(opts.data, opts.limit ? { kind: 'first', n: opts.limit } : undefined);
    const progress = opts.progressLabel ? { label: opts.progressLabel, ...(total !== undefined ? { total } : {}) } : undefined;
    return await score(engine, batches, opts.task, progress);
  } finally {
    await engine.dispose();
  }
}

/**
 * `evaluateModel` of each job in turn, in a worker thread: the caller's event loop stays free (a
 * streaming job keeps folding while it scores a candidate version). A UserError there is one here.
 */
export function evaluateModelsInThread(jobs: readonly EvalJobOptions[]): Promise<EvalResult[]> {
  return runInThread(threadModule(import.meta.url, 'evaluate-thread'), jobs);
}
