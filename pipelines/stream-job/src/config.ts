import path from 'node:path';
import { loadConfig, parseConfig, readYaml, STREAM_CONFIG, STREAM_TASK, streamedStatistic } from '@fisher-merge/config';
import { UserError } from '@fisher-merge/core';
import type { ReadyRule, TaskSpec } from '@fisher-merge/data';
import type { EngineKind } from '@fisher-merge/engines';
import type { FisherMode } from '@fisher-merge/fisher';
import { resolveRule, type Params } from '@fisher-merge/merge';
import { withModelLabelCount } from '@fisher-merge/task-model';
import { gateMetric, type GateBounds, type TaskValidation } from './gate.ts';

/** Where a task's examples come from. */
export type TaskInput =
  | { kind: 'watch'; dir: string; ready: ReadyRule; pollMs: number }
  /** An Arrow IPC stream: stdin (`-`) or a file a writer appends to (followed like `tail -f`). */
  | { kind: 'ipc'; path: string; pollMs: number };

export interface StreamTask {
  spec: TaskSpec;
  model: string;
  lambda: number;
  input: TaskInput;
  /** With a gate: the rows every candidate version is scored on, and the metric judged. */
  validation?: TaskValidation;
}

export interface PublishPolicy {
  /** New examples of any one task since the last version. */
  everyExamples?: number;
  /** Relative L2 change of any task's mean Fisher (sum / examples) since the last version. */
  relativeChange?: number;
  /** Seconds between versions while anything changed. */
  intervalS?: number;
  /** Publish a last version at a clean stop if anything changed (default true). */
  onStop: boolean;
}

export interface StreamConfig {
  /** Directory of versions/, latest, state/, quarantine/, control/. */
  out: string;
  engine: EngineKind;
  mode: FisherMode;
  batchSize: number;
  maxLength: number;
  /** Examples after which old Fisher mass counts half; undefined = no decay (the default). */
  decayHalfLife?: number;
  /** Rows per source batch read from a file. */
  sourceBatchRows: number;
  /** Source batches in flight per task (raised to batch size + 1, which one batch may need). */
  flowWindow: number;
  /** Model batches (of any task) between checkpoints. */
  checkpointEvery: number;
  logIntervalS: number;
  /** The merge rule of every version, its effective parameters, and the base model it may need. */
  merge: { method: string; params: Params; base?: string };
  /** What each task accumulates: the rule's statistic (Gram sums for regmean), mask Fisher otherwise. */
  statistic: 'maskFisher' | 'gram';
  publish: PublishPolicy;
  /** With it, a candidate version becomes `latest` only if every task's figures pass (gate.ts). */
  gate?: GateBounds;
  /** With it, the job is a coordinator: workers compute the Fisher contributions (see @fisher-merge/queue). */
  queue?: QueueConfig;
  /** Prometheus metrics and /healthz on this port. */
  metricsPort?: number;
  /** The tasks of `tasks:` (present for the whole run). */
  tasks: StreamTask[];
  /** Task files that join and leave while the job runs (`tasks_dir`), listed every `pollMs`. */
  tasksDir?: TasksDir;
}

/** gate.metric: one metric name for every task, or one per task name. */
type GateMetricChoice = string | Record<string, string> | undefined;

export interface TasksDir {
  dir: string;
  pollMs: number;
  /** With a gate: each task file needs validation rows, judged by this choice of metric. */
  gate?: { metric: GateMetricChoice };
}

export interface QueueConfig {
  /** redis://HOST:PORT, or the absolute path of a unix socket. */
  url: string;
  prefix: string;
  claimIdleMs: number;
  maxPending: number;
  connectTimeoutS: number;
  maxDeliveries: number;
  prefetch: number;
  stopTimeoutS: number;
}

/** Reads and checks a stream job's YAML config (the shared vocabulary of libs/config); paths in it are relative to the config file. */
export async function loadStreamConfig(file: string): Promise<StreamConfig> {
  const c = await loadConfig(STREAM_CONFIG, file);
  const baseDir = path.dirname(path.resolve(file));
  const tasks = await Promise.all(c.tasks.map((t) => withModelLabelCount(t, path.resolve(baseDir, t.model))));
  return streamConfig({ ...c, tasks }, baseDir, file);
}

/**
 * One task file of a tasks_dir: a `tasks:` entry, its paths relative to the file; with a gate
 * (`gate`, the config's) it needs validation rows. A bad file is one UserError naming it and the key.
 */
export async function loadTaskFile(file: string, gate: TasksDir['gate']): Promise<StreamTask> {
  const baseDir = path.dirname(path.resolve(file));
  const parsed = parseConfig(STREAM_TASK, await readYaml(file), file);
  const entry = await withModelLabelCount(parsed, path.resolve(baseDir, parsed.model));
  if (entry.ipc === '-') throw new UserError(`${file}: ipc: a task file cannot read stdin ('-'); give a file path, or list the task under the config's 'tasks:'`);
  if (gate && entry.validation === undefined) throw new UserError(`${file}: validation: expected a validation Parquet file (the config's gate scores every candidate version on it), got nothing`);
  if (!gate && entry.validation !== undefined) throw new UserError(`${file}: validation: is read by a 'gate' only: add a gate section to the config or leave it out`);
  // Which metric judges a task is known once its labels are (a custom task's from its model).
  return streamTask(entry, baseDir, gate ? taskValidation(entry, gate.metric, baseDir, `${file} (judged by the config's gate)`) : undefined);
}

/** A stream config from a parsed document; custom tasks without `num_labels` keep the default of 2 (loadStreamConfig reads it from the model). */
export function parseStreamConfig(raw: unknown, baseDir: string, name: string): StreamConfig {
  return streamConfig(parseConfig(STREAM_CONFIG, raw, name), baseDir, name);
}

/** `file` names the config in error lines. */
function streamConfig(c: ReturnType<typeof STREAM_CONFIG.parse>, baseDir: string, file: string): StreamConfig {
  const resolve = (p: string): string => path.resolve(baseDir, p);
  const { publish, fisher, gate } = c;
  return {
    out: resolve(c.out),
    engine: c.engine,
    mode: fisher.mode,
    batchSize: fisher.batch_size,
    maxLength: c.max_length,
    ...(fisher.decay_half_life > 0 ? { decayHalfLife: fisher.decay_half_life } : {}),
    sourceBatchRows: c.source_batch_rows,
    flowWindow: Math.max(fisher.batch_size + 1, c.flow_window),
    checkpointEvery: c.checkpoint_every,
    logIntervalS: c.log_interval_s,
    merge: { method: c.rule, params: c.params, ...(c.base_model !== undefined ? { base: resolve(c.base_model) } : {}) },
    // The config's check refused a rule whose statistic a stream cannot accumulate.
    statistic: streamedStatistic(resolveRule(c.rule).needs.stats)!,
    publish: {
      ...(publish.every_examples !== undefined ? { everyExamples: publish.every_examples } : {}),
      ...(publish.relative_change !== undefined ? { relativeChange: publish.relative_change } : {}),
      ...(publish.interval_s !== undefined ? { intervalS: publish.interval_s } : {}),
      onStop: publish.on_stop,
    },
    ...(gate
      ? {
        gate: {
          ...(gate.min_relative_to_own !== undefined ? { minRelativeToOwn: gate.min_relative_to_own } : {}),
          ...(gate.max_drop !== undefined ? { maxDrop: gate.max_drop } : {}),
        },
      }
      : {}),
    ...(c.queue
      ? {
        queue: {
          url: /^rediss?:\/\//.test(c.queue.url) ? c.queue.url : resolve(c.queue.url),
          prefix: c.queue.prefix,
          claimIdleMs: c.queue.claim_idle_ms,
          maxPending: c.queue.max_pending,
          connectTimeoutS: c.queue.connect_timeout_s,
          maxDeliveries: c.queue.max_deliveries,
          prefetch: c.queue.prefetch,
          stopTimeoutS: c.queue.stop_timeout_s,
        },
      }
      : {}),
    ...(c.metrics_port !== undefined ? { metricsPort: c.metrics_port } : {}),
    tasks: c.tasks.map((t) => streamTask(t, baseDir, gate ? taskValidation(t, gate.metric, baseDir, file) : undefined)),
    ...(c.tasks_dir !== undefined ? { tasksDir: { dir: resolve(c.tasks_dir), pollMs: c.tasks_dir_poll_ms, ...(gate ? { gate: { metric: gate.metric } } : {}) } } : {}),
  };
}

type ParsedTask = ReturnType<typeof STREAM_TASK.parse>;

/** A gated task's validation rows, and the metric it is judged by (gate.metric: one name, or per task name); `where` names the file of gate.metric. */
function taskValidation(t: ParsedTask, metric: GateMetricChoice, baseDir: string, where: string): TaskValidation {
  const chosen = typeof metric === 'string' ? metric : metric?.[t.name];
  return { file: path.resolve(baseDir, t.validation!), metric: gateMetric(t.spec, chosen, `${where}: gate.metric${typeof metric === 'object' ? `.${t.name}` : ''}`) };
}

function streamTask(t: ParsedTask, baseDir: string, validation: TaskValidation | undefined): StreamTask {
  const resolve = (p: string): string => path.resolve(baseDir, p);
  return {
    spec: t.spec,
    model: resolve(t.model),
    lambda: t.lambda,
    input: t.watch !== undefined
      ? {
        kind: 'watch',
        dir: resolve(t.watch),
        pollMs: t.poll_ms,
        ready: t.ready === 'marker' ? { kind: 'marker', suffix: t.marker_suffix ?? '.done' } : { kind: 'stable', ms: t.stable_ms ?? 2000 },
      }
      : { kind: 'ipc', path: t.ipc === '-' ? '-' : resolve(t.ipc!), pollMs: t.poll_ms },
    ...(validation ? { validation } : {}),
  };
}
