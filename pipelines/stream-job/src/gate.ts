import { sha256Files, UserError } from '@fisher-merge/core';
import type { TaskSpec } from '@fisher-merge/data';
import type { EngineKind } from '@fisher-merge/engines';
import type { MetricName } from '@fisher-merge/eval';
import { describeModel, modelFingerprint } from '@fisher-merge/model';
import { evaluateModelsInThread, metricsFor, primaryMetric, type EvalResult } from '@fisher-merge/eval/evaluate';
import type { StreamConfig } from './config.ts';

/** A gated task's validation rows and the metric it is judged by. */
export interface TaskValidation {
  file: string;
  metric: MetricName;
}

/** The bounds of `gate:` (either may be absent). */
export interface GateBounds {
  minRelativeToOwn?: number;
  maxDrop?: number;
}

/** The metric a gate judges `spec` by: `chosen` (gate.metric) if the task's evaluation reports it, else the task's headline metric. */
export function gateMetric(spec: TaskSpec, chosen: string | undefined, where: string): MetricName {
  if (chosen === undefined) return primaryMetric(spec);
  const known = metricsFor(spec);
  if (!known.includes(chosen as MetricName)) throw new UserError(`${where}: expected one of ${known.join(', ')} (the metrics of task ${spec.name}), got ${JSON.stringify(chosen)}`);
  return chosen as MetricName;
}

/** One task's figures on its validation rows, as the manifest and rejection.json record them. */
export interface TaskScore {
  validation: string;
  /** sha256 of the validation file: a previous version's figure is compared on the same rows only. */
  data_fingerprint: string;
  examples: number;
  metric: MetricName;
  /** The candidate's value of `metric`; null when it is not a number (the correlation of constant predictions). */
  value: number | null;
  /** The task's own model's value on the same rows. */
  own: number | null;
  /** The last accepted version's value of the same metric on the same rows; null when there is none. */
  previous: number | null;
  /** Every metric the evaluation reports for the task, the candidate's. */
  metrics: Record<string, number | null>;
}

export interface VersionEvaluation {
  min_relative_to_own: number | null;
  max_drop: number | null;
  /** The last accepted version the candidate was compared with. */
  previous_version: number | null;
  tasks: Record<string, TaskScore>;
}

/** A bound a task's figure fell below. */
export interface GateFailure {
  task: string;
  metric: MetricName;
  bound: 'min_relative_to_own' | 'max_drop';
  value: number | null;
  /** What the bound asked for: min_relative_to_own x own, or previous - max_drop. */
  required: number;
  own: number | null;
  previous: number | null;
}

/** A task of a candidate: its name and spec, its own model, its folder in the candidate, its validation rows. */
export interface GatedTask {
  name: string;
  spec: TaskSpec;
  model: string;
  folder: string;
  validation: TaskValidation;
}

/** A task as its own model is scored: a candidate's task without the candidate's folder. */
type OwnTask = Omit<GatedTask, 'folder'>;

/** The last accepted version as the gate compares with it: its number and its manifest's evaluation. */
export interface AcceptedVersion {
  version: number;
  evaluation?: VersionEvaluation;
}

const finite = (v: number | undefined): number | null => (v !== undefined && Number.isFinite(v) ? v : null);

/**
 * Scores candidate versions on each task's validation rows with that task's own head and judges
 * them against the bounds. Every evaluation runs in a worker thread, so the job folds meanwhile.
 * Each task's own model is scored once per content of its weights and of its validation file (sha256), and kept.
 */
export class VersionGate {
  private readonly own = new Map<string, EvalResult>();

  /** `threads`: engine threads of each evaluation (default: every core). */
  constructor(private readonly bounds: GateBounds, private readonly engine: EngineKind, private readonly maxLength: number, private readonly threads?: number) {}

  /**
   * Scores the own models of `tasks` not scored yet on these rows (one thread): a missing or
   * unreadable validation file, or an own figure the relative bound cannot use, is a UserError.
   */
  async scoreOwnModels(tasks: readonly OwnTask[]): Promise<EvalResult[]> {
    const keys = await Promise.all(tasks.map((t) => this.ownKey(t)));
    const missing = tasks.flatMap((task, j) => (this.own.has(keys[j]!) ? [] : [{ task, key: keys[j]! }]));
    const results = missing.length === 0 ? [] : await evaluateModelsInThread(missing.map(({ task }) => this.job(task, task.model)));
    missing.forEach(({ task, key }, i) => {
      this.checkOwn(task, results[i]!);
      this.own.set(key, results[i]!);
    });
    return keys.map((key) => this.own.get(key)!);
  }

  /** The candidate's figures (its task folders scored in a thread) and the bounds they fall below, task by task in order. */
  async judge(tasks: readonly GatedTask[], previous: AcceptedVersion | undefined): Promise<{ evaluation: VersionEvaluation; failures: GateFailure[] }> {
    const own = await this.scoreOwnModels(tasks);
    const results = await evaluateModelsInThread(tasks.map((t) => this.job(t, t.folder)));
    const failures: GateFailure[] = [];
    const scores: Record<string, TaskScore> = {};
    for (const [j, task] of tasks.entries()) {
      const { metric, file } = task.validation;
      const data_fingerprint = await sha256Files([file]);
      const before = previous?.evaluation?.tasks[task.name];
      const score: TaskScore = {
        validation: file,
        data_fingerprint,
        examples: results[j]!.examples,
        metric,
        value: finite(results[j]!.metrics[metric]),
        own: finite(own[j]!.metrics[metric]),
        previous: before?.metric === metric && before.data_fingerprint === data_fingerprint ? before.value : null,
        metrics: Object.fromEntries(Object.entries(results[j]!.metrics).map(([k, v]) => [k, finite(v)])),
      };
      scores[task.name] = score;
      const below = (bound: GateFailure['bound'], required: number): void => {
        // A value that is not a number passes no bound.
        if (score.value === null || score.value < required) failures.push({ task: task.name, metric, bound, value: score.value, required, own: score.own, previous: score.previous });
      };
      if (this.bounds.minRelativeToOwn !== undefined) below('min_relative_to_own', this.bounds.minRelativeToOwn * score.own!);
      if (this.bounds.maxDrop !== undefined && score.previous !== null) below('max_drop', score.previous - this.bounds.maxDrop);
    }
    return {
      evaluation: {
        min_relative_to_own: this.bounds.minRelativeToOwn ?? null,
        max_drop: this.bounds.maxDrop ?? null,
        previous_version: previous?.version ?? null,
        tasks: scores,
      },
      failures,
    };
  }

  private async ownKey(task: OwnTask): Promise<string> {
    // The model by its weights' content (hashed once per file version; the job's own load shares the
    // hash): a model replaced at the same path is scored again.
    const weights = await modelFingerprint(await describeModel(task.model));
    return JSON.stringify([task.name, weights, task.validation.file, await sha256Files([task.validation.file]).catch(() => 'unreadable')]);
  }

  private job(task: OwnTask, modelDir: string) {
    return { modelDir, data: task.validation.file, task: task.spec, engine: this.engine, maxLength: this.maxLength, ...(this.threads !== undefined ? { threads: this.threads } : {}) };
  }

  private checkOwn(task: OwnTask, result: EvalResult): void {
    const { metric, file } = task.validation;
    if (this.bounds.minRelativeToOwn !== undefined && finite(result.metrics[metric]) === null) {
      throw new UserError(`${file}: task ${task.name}'s own model scores ${metric} ${result.metrics[metric]} on these rows (constant predictions?), so gate.min_relative_to_own cannot judge it; use other validation rows or another gate.metric`);
    }
  }
}

/** The config's gate with every task's own model scored (in a thread, before the job starts: a bad validation file stops it here). */
export async function openGate(config: StreamConfig, threads: number | undefined): Promise<VersionGate | undefined> {
  if (!config.gate) return undefined;
  const gate = new VersionGate(config.gate, config.engine, config.maxLength, threads);
  await gate.scoreOwnModels(config.tasks.map((t) => ({ name: t.spec.name, spec: t.spec, model: t.model, validation: t.validation! })));
  return gate;
}
