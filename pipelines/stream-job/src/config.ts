import { promises as fs } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { UserError } from '@fisher-merge/core';
import { customTask, DEFAULT_MAX_LENGTH, glueTask, type ReadyRule, type TaskSpec } from '@fisher-merge/data';
import { ENGINE_KINDS, type EngineKind } from '@fisher-merge/engines';
import type { FisherMode } from '@fisher-merge/fisher';
import type { Params } from '@fisher-merge/merge';

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
  mergeParams: Params;
  publish: PublishPolicy;
  tasks: StreamTask[];
}

type Raw = Record<string, unknown>;

/** Reads and checks a stream job's YAML config; paths in it are relative to the config file. */
export async function loadStreamConfig(file: string): Promise<StreamConfig> {
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new UserError(e.code === 'ENOENT' ? `config file not found: ${file}` : `cannot read config ${file}: ${e.message}`);
  });
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (e) {
    throw new UserError(`${file}: invalid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  return parseStreamConfig(raw, path.dirname(path.resolve(file)), file);
}

export function parseStreamConfig(raw: unknown, baseDir: string, name: string): StreamConfig {
  const fail = (key: string, expected: string, value: unknown): never => {
    throw new UserError(`${name}: '${key}' must be ${expected}, got ${JSON.stringify(value)}`);
  };
  const object = (value: unknown, key: string): Raw => {
    if (value === undefined || value === null) return {};
    if (typeof value !== 'object' || Array.isArray(value)) fail(key, 'a mapping', value);
    return value as Raw;
  };
  const known = (obj: Raw, key: string, keys: readonly string[]): void => {
    for (const k of Object.keys(obj)) if (!keys.includes(k)) throw new UserError(`${name}: unknown key '${key ? `${key}.` : ''}${k}' (known: ${keys.join(', ')})`);
  };
  const number = (obj: Raw, key: string, full: string, { min, integer, fallback }: { min: number; integer?: boolean; fallback?: number }): number | undefined => {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) fail(full, `${integer ? 'an integer' : 'a number'} >= ${min}`, v);
    return v as number;
  };
  const string = (obj: Raw, key: string, full: string): string | undefined => {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' || v === '') fail(full, 'a non-empty string', v);
    return v as string;
  };
  const choice = <T extends string>(obj: Raw, key: string, full: string, choices: readonly T[], fallback: T): T => {
    const v = obj[key] ?? fallback;
    if (!choices.includes(v as T)) fail(full, `one of ${choices.join(', ')}`, v);
    return v as T;
  };
  const resolve = (p: string): string => path.resolve(baseDir, p);

  const top = object(raw, '');
  known(top, '', ['out', 'engine', 'fisher', 'merge', 'publish', 'checkpoint_every', 'flow_window', 'source_batch_rows', 'log_interval_s', 'tasks']);
  const out = string(top, 'out', 'out') ?? fail('out', 'an output directory', top.out);

  const fisher = object(top.fisher, 'fisher');
  known(fisher, 'fisher', ['mode', 'batch_size', 'max_length', 'decay_half_life']);
  const merge = object(top.merge, 'merge');
  known(merge, 'merge', ['params']);
  const params = object(merge.params, 'merge.params') as Params;
  const publish = object(top.publish, 'publish');
  known(publish, 'publish', ['every_examples', 'relative_change', 'interval_s', 'on_stop']);
  if (publish.on_stop !== undefined && typeof publish.on_stop !== 'boolean') fail('publish.on_stop', 'true or false', publish.on_stop);

  if (!Array.isArray(top.tasks) || top.tasks.length === 0) fail('tasks', 'a non-empty list', top.tasks);
  const tasks = (top.tasks as unknown[]).map((entry, i): StreamTask => {
    const key = `tasks[${i}]`;
    const t = object(entry, key);
    known(t, key, ['task', 'name', 'text_column', 'text_pair_column', 'label_column', 'num_labels', 'model', 'lambda', 'watch', 'ready', 'stable_ms', 'marker_suffix', 'ipc', 'poll_ms']);
    const spec = taskSpec(t, key, name, string, number, fail);
    const model = string(t, 'model', `${key}.model`) ?? fail(`${key}.model`, 'a model directory', t.model);
    const watch = string(t, 'watch', `${key}.watch`);
    const ipc = string(t, 'ipc', `${key}.ipc`);
    if ((watch === undefined) === (ipc === undefined)) throw new UserError(`${name}: ${key} needs exactly one source: 'watch' (a directory of Parquet files) or 'ipc' (an Arrow IPC stream: - for stdin, or a file being appended)`);
    const pollMs = number(t, 'poll_ms', `${key}.poll_ms`, { min: 1, integer: true, fallback: 500 })!;
    let input: TaskInput;
    if (watch !== undefined) {
      const ready = choice(t, 'ready', `${key}.ready`, ['stable', 'marker'] as const, 'stable');
      input = {
        kind: 'watch',
        dir: resolve(watch),
        pollMs,
        ready: ready === 'marker'
          ? { kind: 'marker', suffix: string(t, 'marker_suffix', `${key}.marker_suffix`) ?? '.done' }
          : { kind: 'stable', ms: number(t, 'stable_ms', `${key}.stable_ms`, { min: 0, integer: true, fallback: 2000 })! },
      };
    } else {
      for (const k of ['ready', 'stable_ms', 'marker_suffix']) if (t[k] !== undefined) throw new UserError(`${name}: '${key}.${k}' applies to 'watch' sources only`);
      input = { kind: 'ipc', path: ipc === '-' ? '-' : resolve(ipc!), pollMs };
    }
    return { spec, model: resolve(model), lambda: number(t, 'lambda', `${key}.lambda`, { min: 0, fallback: 1 })!, input };
  });
  const names = tasks.map((t) => t.spec.name);
  names.forEach((n, i) => {
    if (names.indexOf(n) !== i) throw new UserError(`${name}: tasks[${i}] repeats task name '${n}'; give each task a distinct 'name'`);
  });
  const stdin = tasks.filter((t) => t.input.kind === 'ipc' && t.input.path === '-');
  if (stdin.length > 1) throw new UserError(`${name}: only one task can read stdin ('ipc: -')`);

  const batchSize = number(fisher, 'batch_size', 'fisher.batch_size', { min: 1, integer: true, fallback: 32 })!;
  const halfLife = number(fisher, 'decay_half_life', 'fisher.decay_half_life', { min: 0, fallback: 0 })!;
  const everyExamples = number(publish, 'every_examples', 'publish.every_examples', { min: 1, integer: true });
  const relativeChange = number(publish, 'relative_change', 'publish.relative_change', { min: 0 });
  const intervalS = number(publish, 'interval_s', 'publish.interval_s', { min: 0.001 });
  return {
    out: resolve(out),
    engine: choice(top, 'engine', 'engine', ENGINE_KINDS, 'auto'),
    mode: choice(fisher, 'mode', 'fisher.mode', ['batch', 'example'] as const, 'batch'),
    batchSize,
    maxLength: number(fisher, 'max_length', 'fisher.max_length', { min: 1, integer: true, fallback: DEFAULT_MAX_LENGTH })!,
    ...(halfLife > 0 ? { decayHalfLife: halfLife } : {}),
    sourceBatchRows: number(top, 'source_batch_rows', 'source_batch_rows', { min: 1, integer: true, fallback: 256 })!,
    flowWindow: Math.max(batchSize + 1, number(top, 'flow_window', 'flow_window', { min: 1, integer: true, fallback: 8 })!),
    checkpointEvery: number(top, 'checkpoint_every', 'checkpoint_every', { min: 1, integer: true, fallback: 1 })!,
    logIntervalS: number(top, 'log_interval_s', 'log_interval_s', { min: 0.001, fallback: 10 })!,
    mergeParams: params,
    publish: {
      ...(everyExamples !== undefined ? { everyExamples } : {}),
      ...(relativeChange !== undefined ? { relativeChange } : {}),
      ...(intervalS !== undefined ? { intervalS } : {}),
      onStop: (publish.on_stop as boolean | undefined) ?? true,
    },
    tasks,
  };
}

function taskSpec(
  t: Raw,
  key: string,
  configName: string,
  string: (obj: Raw, k: string, full: string) => string | undefined,
  number: (obj: Raw, k: string, full: string, o: { min: number; integer?: boolean }) => number | undefined,
  fail: (key: string, expected: string, value: unknown) => never,
): TaskSpec {
  const preset = string(t, 'task', `${key}.task`);
  const textColumn = string(t, 'text_column', `${key}.text_column`);
  const name = string(t, 'name', `${key}.name`);
  if ((preset === undefined) === (textColumn === undefined)) fail(`${key}.task`, "a GLUE task name, or leave it out and give 'text_column' (and 'name')", t.task);
  if (preset !== undefined) {
    for (const k of ['text_pair_column', 'label_column', 'num_labels']) if (t[k] !== undefined) fail(`${key}.${k}`, `absent with 'task: ${preset}'`, t[k]);
    try {
      return { ...glueTask(preset), ...(name ? { name } : {}) };
    } catch (e) {
      throw new UserError(`${configName}: ${key}.task: ${(e as Error).message}`);
    }
  }
  if (name === undefined) fail(`${key}.name`, 'a task name for a custom task', t.name);
  const pair = string(t, 'text_pair_column', `${key}.text_pair_column`);
  const label = string(t, 'label_column', `${key}.label_column`);
  const numLabels = number(t, 'num_labels', `${key}.num_labels`, { min: 1, integer: true });
  try {
    return customTask({ name: name!, textColumn: textColumn!, ...(pair ? { textPairColumn: pair } : {}), ...(label ? { labelColumn: label } : {}), ...(numLabels ? { numLabels } : {}) });
  } catch (e) {
    throw new UserError(`${configName}: ${key}: ${(e as Error).message}`);
  }
}
