import path from 'node:path';
import { loadConfig, parseConfig, STREAM_CONFIG, streamedStatistic } from '@fisher-merge/config';
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
  tasks: StreamTask[];
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

/** A stream config from a parsed document; custom tasks without `num_labels` keep the default of 2 (loadStreamConfig reads it from the model). */
export function parseStreamConfig(raw: unknown, baseDir: string, name: string): StreamConfig {
  return streamConfig(parseConfig(STREAM_CONFIG, raw, name), baseDir, name);
}

/** `file` names the config in error lines. */
function streamConfig(c: ReturnType<typeof STREAM_CONFIG.parse>, baseDir: string, file: string): StreamConfig {
  const resolve = (p: string): string => path.resolve(baseDir, p);
  const { publish, fisher, gate } = c;
  // Which metric judges a task is known once its labels are (a custom task's from its model).
  const validation = (t: (typeof c.tasks)[number], g: NonNullable<typeof gate>): TaskValidation => {
    const chosen = typeof g.metric === 'string' ? g.metric : g.metric?.[t.name];
    const where = `${file}: gate.metric${typeof g.metric === 'object' ? `.${t.name}` : ''}`;
    return { file: resolve(t.validation!), metric: gateMetric(t.spec, chosen, where) };
  };
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
    tasks: c.tasks.map((t): StreamTask => ({
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
      ...(gate ? { validation: validation(t, gate) } : {}),
    })),
  };
}
