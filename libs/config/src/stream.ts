import { z } from 'zod';
import { isUserError } from '@fisher-merge/core';
import { resolveRule, type Statistic } from '@fisher-merge/merge';
import { checked, choice, expected, flag, int, number, positive, section, text } from './schema.ts';
import { BASE_RENAMED, ENGINE, FISHER_KEYS, MAX_LENGTH, METHOD_KEYS, OUT, ruleParams, TASK_KEYS, TASK_RENAMED, taskList, withTask } from './sections.ts';

const WATCH_ONLY = ['ready', 'stable_ms', 'marker_suffix'] as const;

/** One task of `fisher-merge stream CONFIG.yaml`: its model, its merge coefficient and its source. */
export const STREAM_TASK = section({
  ...TASK_KEYS,
  model: text('a model folder'),
  lambda: number(0).default(1),
  /** A directory of Parquet files. */
  watch: text('a directory path').optional(),
  ready: choice(['stable', 'marker']).optional(),
  stable_ms: int(0).optional(),
  marker_suffix: text().optional(),
  /** An Arrow IPC stream: `-` for stdin, or a file being appended. */
  ipc: text('a path or -').optional(),
  poll_ms: int(1).default(500),
  /** Labelled Parquet rows every candidate version is scored on (with `gate`). */
  validation: text('a validation Parquet file').optional(),
}, TASK_RENAMED)
  .superRefine((t, ctx) => {
    if ((t.watch === undefined) === (t.ipc === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: "needs exactly one source: 'watch' (a directory of Parquet files) or 'ipc' (an Arrow IPC stream: - for stdin, or a file being appended)" });
    }
    if (t.ipc !== undefined) for (const k of WATCH_ONLY) if (t[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: "applies to 'watch' sources only" });
  })
  .transform(checked(withTask));

export const STREAM_KEYS = {
  out: OUT,
  engine: ENGINE,
  max_length: MAX_LENGTH,
  fisher: section({ ...FISHER_KEYS, decay_half_life: number(0).default(0) }, { max_length: "moved to the top level ('max_length')" }).prefault({}),
  /** Any rule of the registry needing no statistics, or mask Fisher, or Gram sums (regmean): the job accumulates that one. */
  ...METHOD_KEYS,
  merge_method: METHOD_KEYS.merge_method.default('mask-fisher'),
  base_model: text('a base model folder').optional(),
  publish: section({
    every_examples: int(1).optional(),
    relative_change: number(0).optional(),
    interval_s: positive().optional(),
    on_stop: flag().default(true),
  }).prefault({}),
  checkpoint_every: int(1).default(1),
  flow_window: int(1).default(8),
  source_batch_rows: int(1).default(256),
  log_interval_s: positive().default(10),
  /** Fisher work spread over `fisher-merge worker` processes through Redis Streams (this job coordinates). */
  queue: section({
    /** redis://HOST:PORT, or a unix socket path. */
    url: text('redis://HOST:PORT or a unix socket path'),
    /** Prefix of every key the job uses; one per job. */
    prefix: text('a key prefix').default('fisher-merge'),
    /** A worker's unacknowledged batch is taken over by another worker after this long. */
    claim_idle_ms: int(1).default(30_000),
    /** Batches per task in Redis, appended and not yet folded in; the coordinator waits beyond it. */
    max_pending: int(1).default(64),
    /** How long Redis may be unreachable (at start, or later for the coordinator) before giving up. */
    connect_timeout_s: positive().default(30),
    /** An entry delivered more often than this (a batch that kills its worker) is dead-lettered. */
    max_deliveries: int(1).default(3),
    /** Entries a worker reads ahead while it computes one. */
    prefetch: int(0).default(1),
    /** After SIGTERM, a worker finishes the batches in hand for at most this long, then abandons them. */
    stop_timeout_s: positive().default(10),
  }).optional(),
  /**
   * A candidate version becomes `latest` only if every task's metric on its validation rows is at
   * least `min_relative_to_own` x its own model's and at least the last accepted version's minus
   * `max_drop` (either may be left out: with neither, versions are scored and always accepted).
   */
  gate: section({
    min_relative_to_own: positive().optional(),
    max_drop: number(0).optional(),
    /** Which of a task's metrics is judged (default: its headline metric); per task name in a mapping. */
    metric: z.union([text('a metric name'), z.record(z.string(), text('a metric name'))], expected('a metric name, or a mapping of task name to metric name')).optional(),
  }).optional(),
  /** Serves Prometheus metrics (/metrics) and /healthz on this port (the coordinator or single process). */
  metrics_port: int(1).max(65535, 'expected a TCP port (1-65535)').optional(),
  tasks: taskList(STREAM_TASK).superRefine((tasks, ctx) => {
    const stdin = tasks.flatMap((t, i) => (t.ipc === '-' ? [i] : []));
    if (stdin.length > 1) ctx.addIssue({ code: 'custom', path: [stdin[1]!, 'ipc'], message: "only one task can read stdin ('ipc: -')" });
  }).optional(),
  /** A directory of task files (`*.yaml`, each one `tasks:` entry): a file that appears joins the running job, one removed leaves. */
  tasks_dir: text('a directory path').optional(),
  /** How often tasks_dir is listed. */
  tasks_dir_poll_ms: int(1).default(1000),
};

/** A gate needs every task's validation rows, and validation rows are read by a gate only (a task file's are checked when it is read). */
function checkGate(c: { gate?: { metric?: string | Record<string, string> | undefined } | undefined; tasks: readonly { name: string; validation?: string | undefined }[]; tasks_dir?: string | undefined }, ctx: z.RefinementCtx): void {
  c.tasks.forEach((t, i) => {
    if (c.gate && t.validation === undefined) ctx.addIssue({ code: 'custom', path: ['tasks', i, 'validation'], message: 'expected a validation Parquet file (the gate scores every candidate version on it), got nothing' });
    if (!c.gate && t.validation !== undefined) ctx.addIssue({ code: 'custom', path: ['tasks', i, 'validation'], message: "is read by a 'gate' only: add a gate section or leave it out", input: t.validation });
  });
  const metric = c.gate?.metric;
  // Task files name tasks the config cannot know.
  if (typeof metric !== 'object' || c.tasks_dir !== undefined) return;
  const names = c.tasks.map((t) => t.name);
  for (const name of Object.keys(metric)) {
    if (!names.includes(name)) ctx.addIssue({ code: 'custom', path: ['gate', 'metric', name], message: `expected a task name (one of ${names.join(', ')}), got ${JSON.stringify(name)}`, input: name });
  }
}

export const STREAM_CONFIG = section(STREAM_KEYS, { merge: "moved: the merge rule's parameters are the top-level 'parameters' (was merge.params)", ...BASE_RENAMED })
  .superRefine((c, ctx) => {
    const rule = resolveRule(c.merge_method);
    const statistic = streamedStatistic(rule.needs.stats);
    if (statistic === undefined) ctx.addIssue({ code: 'custom', path: ['merge_method'], message: `method ${rule.name} needs ${rule.needs.stats.join(' and ')} statistics; a stream job accumulates one of mask Fisher or Gram (regmean)`, input: c.merge_method });
    if (statistic === 'gram') {
      // Gram sums are a gigabyte per BERT-base task and their files hold whole position counts: see the stream README's RegMean section.
      const refuse = (path: (string | number)[], why: string, input: unknown) => ctx.addIssue({ code: 'custom', path, message: `not available with method ${rule.name} (Gram statistics): ${why}`, input });
      if (c.fisher.decay_half_life > 0) refuse(['fisher', 'decay_half_life'], 'the Gram counts stay whole positions; use 0 (no decay)', c.fisher.decay_half_life);
      if (c.publish.relative_change !== undefined) refuse(['publish', 'relative_change'], 'it would keep a second copy of every Gram sum; use every_examples or interval_s', c.publish.relative_change);
      if (c.queue !== undefined) refuse(['queue'], 'workers compute mask Fisher only; run regmean in one process (no queue)', '(a queue section)');
    }
    if (rule.needs.base && c.base_model === undefined) ctx.addIssue({ code: 'custom', path: ['base_model'], message: `expected a base model folder (method ${rule.name} needs one), got nothing` });
    if (c.tasks === undefined && c.tasks_dir === undefined) ctx.addIssue({ code: 'custom', path: ['tasks'], message: "expected a non-empty list of task entries or 'tasks_dir' (a directory of task files), got nothing" });
    // Tasks that join and leave change the count a fixed-count method needs.
    if (rule.needs.models !== undefined && c.tasks_dir !== undefined) ctx.addIssue({ code: 'custom', path: ['tasks_dir'], message: `method ${rule.name} merges exactly ${rule.needs.models} models; with tasks_dir the number of tasks changes while the job runs`, input: c.tasks_dir });
    else if (rule.needs.models !== undefined && c.tasks !== undefined && c.tasks.length !== rule.needs.models) ctx.addIssue({ code: 'custom', path: ['tasks'], message: `expected ${rule.needs.models} tasks (method ${rule.name} merges exactly ${rule.needs.models} models), got ${c.tasks.length}` });
    checkGate({ ...c, tasks: c.tasks ?? [] }, ctx);
    try {
      ruleParams(rule.name, c.parameters);
    } catch (e) {
      if (!isUserError(e)) throw e;
      ctx.addIssue({ code: 'custom', path: ['parameters'], message: e.message, input: c.parameters });
    }
  })
  .transform((c) => ({ ...c, tasks: c.tasks ?? [], ...ruleParams(c.merge_method, c.parameters) }));

/** The one statistic a stream job accumulates for a rule needing these: Gram sums for regmean, else mask Fisher; undefined when it cannot. */
export function streamedStatistic(needs: readonly Statistic[]): 'maskFisher' | 'gram' | undefined {
  if (needs.length === 0) return 'maskFisher';
  return needs.length === 1 && (needs[0] === 'maskFisher' || needs[0] === 'gram') ? needs[0] : undefined;
}

export type StreamConfigKeys = z.output<typeof STREAM_CONFIG>;
