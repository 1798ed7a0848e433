import { concatMap, lastValueFrom, toArray } from 'rxjs';
import { GLUE_METRICS, computeMetrics, type MetricName } from '@fisher-merge/eval';
import { FlowControl, taskBatches, type TaskSpec } from '@fisher-merge/data';
import { openEngine, type EngineKind } from '@fisher-merge/engines';
import { loadTaskModel } from './task-model.ts';

export interface EvalJobOptions {
  modelDir: string;
  data: string;
  task: TaskSpec;
  engine: EngineKind;
  limit?: number;
  batchSize?: number;
  maxLength?: number;
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

/** Runs a fine-tuned model over a labelled split and scores its predictions. */
export async function evaluateModel(opts: EvalJobOptions): Promise<EvalResult> {
  const { model, tokenizer } = await loadTaskModel(opts.modelDir, opts.task);
  const engine = await openEngine(opts.engine, model.weights, { log: () => {} });
  try {
    const flow = new FlowControl(4);
    const parts = await lastValueFrom(
      taskBatches(opts.data, {
        task: opts.task,
        tokenizer,
        batchSize: opts.batchSize ?? 64,
        padTokenId: model.config.padTokenId,
        flow,
        ...(opts.limit ? { sample: { kind: 'first' as const, n: opts.limit } } : {}),
        ...(opts.maxLength ? { maxLength: opts.maxLength } : {}),
      }).pipe(
        concatMap(async ({ tokens, completedSources }) => {
          const logits = await engine.forward(tokens);
          flow.release(completedSources.length);
          return { logits, labels: tokens.labels! };
        }),
        toArray(),
      ),
    );
    const C = model.config.numLabels;
    const examples = parts.reduce((n, p) => n + p.labels.length, 0);
    const logits = new Float32Array(examples * C);
    const labels = new Float64Array(examples);
    let at = 0;
    for (const p of parts) {
      logits.set(p.logits, at * C);
      labels.set(p.labels, at);
      at += p.labels.length;
    }
    return { task: opts.task.name, examples, metrics: computeMetrics(metricsFor(opts.task), logits, C, labels) };
  } finally {
    await engine.dispose();
  }
}
