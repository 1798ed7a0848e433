import { promises as fs } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { UserError } from '@fisher-merge/core';
import { customTask, glueTask, type TaskSpec } from '@fisher-merge/data';
import { ENGINE_KINDS, type EngineKind } from '@fisher-merge/engines';
import type { FisherMode } from '@fisher-merge/fisher';
import { resolveParams, resolveRule, type Params } from '@fisher-merge/merge';

/** One fine-tuned model and its task's data. Paths are resolved against the config file's folder. */
export interface RunTask {
  name: string;
  spec: TaskSpec;
  model: string;
  train: string;
  validation?: string;
}

export interface RunConfig {
  file: string;
  output: string;
  engine: EngineKind;
  maxLength: number;
  tasks: RunTask[];
  fisher: { samples?: number; seed?: number; batchSize: number; mode: FisherMode };
  fullFisher: { samples?: number; seed?: number; batchSize: number; mode: 'empirical' | 'expected'; loop: 'batched' | 'classic' };
  /** `label` names the method's results and output folder (default: the rule's name). */
  methods: { label: string; rule: string; params: Params }[];
  base?: string;
  /** Groups of task names, each merged into one model. */
  merges: string[][];
  evaluation: { limit?: number; batchSize: number } | undefined;
}

type Json = unknown;

/** Reads values out of the parsed YAML with messages that name the file and the key path. */
class ConfigReader {
  constructor(private readonly file: string) {}

  fail(key: string, expected: string, got: Json): never {
    throw new UserError(`${this.file}: ${key}: expected ${expected}, got ${got === undefined ? 'nothing' : JSON.stringify(got)}`);
  }

  object(key: string, value: Json, optional = false): Record<string, Json> | undefined {
    if (value === undefined && optional) return undefined;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) this.fail(key, 'a mapping', value);
    return value as Record<string, Json>;
  }

  string(key: string, value: Json): string {
    if (typeof value !== 'string' || value.trim() === '') this.fail(key, 'a non-empty string', value);
    return value;
  }

  int(key: string, value: Json, min: number): number {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min) this.fail(key, `an integer >= ${min}`, value);
    return value;
  }

  choice<T extends string>(key: string, value: Json, choices: readonly T[]): T {
    if (typeof value !== 'string' || !choices.includes(value as T)) this.fail(key, `one of ${choices.join(', ')}`, value);
    return value as T;
  }

  path(key: string, value: Json): string {
    return path.resolve(path.dirname(this.file), this.string(key, value));
  }

  /** Rejects keys the schema does not know, so a typo is not silently ignored. */
  known(key: string, obj: Record<string, Json>, keys: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!keys.includes(k)) throw new UserError(`${this.file}: ${key ? `${key}.` : ''}${k}: unknown key (known: ${keys.join(', ')})`);
    }
  }
}

const TOP_KEYS = ['output', 'engine', 'max_length', 'tasks', 'fisher', 'full_fisher', 'methods', 'base', 'merges', 'evaluation'] as const;

export async function readRunConfig(file: string): Promise<RunConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    throw new UserError(`config file not found: ${file}`);
  }
  let doc: Json;
  try {
    doc = parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  return parseRunConfig(file, doc);
}

export function parseRunConfig(file: string, doc: Json): RunConfig {
  const r = new ConfigReader(file);
  const top = r.object('(top level)', doc)!;
  r.known('', top, TOP_KEYS);

  const tasksObj = r.object('tasks', top.tasks)!;
  const tasks = Object.entries(tasksObj).map(([name, value]): RunTask => {
    const key = `tasks.${name}`;
    const t = r.object(key, value)!;
    r.known(key, t, ['model', 'train', 'validation', 'glue_task', 'text_column', 'text_pair_column', 'label_column', 'num_labels']);
    const spec = t.text_column !== undefined
      ? customTask({
        name,
        textColumn: r.string(`${key}.text_column`, t.text_column),
        ...(t.text_pair_column !== undefined ? { textPairColumn: r.string(`${key}.text_pair_column`, t.text_pair_column) } : {}),
        ...(t.label_column !== undefined ? { labelColumn: r.string(`${key}.label_column`, t.label_column) } : {}),
        ...(t.num_labels !== undefined ? { numLabels: r.int(`${key}.num_labels`, t.num_labels, 1) } : {}),
      })
      : glueTask(t.glue_task !== undefined ? r.string(`${key}.glue_task`, t.glue_task) : name);
    return {
      name,
      spec,
      model: r.path(`${key}.model`, t.model),
      train: r.path(`${key}.train`, t.train),
      ...(t.validation !== undefined ? { validation: r.path(`${key}.validation`, t.validation) } : {}),
    };
  });
  if (tasks.length === 0) r.fail('tasks', 'at least one task', top.tasks);
  const taskNames = tasks.map((t) => t.name);

  const fisherObj = r.object('fisher', top.fisher, true) ?? {};
  r.known('fisher', fisherObj, ['samples', 'seed', 'batch_size', 'mode']);
  const fullObj = r.object('full_fisher', top.full_fisher, true) ?? {};
  r.known('full_fisher', fullObj, ['samples', 'seed', 'batch_size', 'mode', 'loop']);

  const methodList: Json = top.methods ?? ['mask-fisher'];
  if (!Array.isArray(methodList) || methodList.length === 0) r.fail('methods', 'a non-empty list of method names or {name, params, label}', methodList);
  const methods = (methodList as Json[]).map((m: Json, i: number) => {
    const key = `methods[${i}]`;
    const entry = typeof m === 'string' ? { name: m } : r.object(key, m)!;
    r.known(key, entry, ['name', 'params', 'label']);
    const name = r.string(`${key}.name`, entry.name);
    const rule = resolveRule(name);
    const params = (r.object(`${key}.params`, entry.params, true) ?? {}) as Params;
    const label = entry.label === undefined ? rule.name : r.string(`${key}.label`, entry.label);
    if (!/^[\w.-]+$/.test(label)) r.fail(`${key}.label`, 'a name of letters, digits, ".", "_" or "-" (it names a folder)', label);
    return { label, rule: rule.name, params: resolveParams(rule, params) };
  });
  const labels = methods.map((m) => m.label);
  labels.forEach((label, i) => {
    if (labels.indexOf(label) !== i) r.fail(`methods[${i}]`, `a label other than '${label}' (used twice: give one of them a label)`, label);
  });
  const base = top.base !== undefined ? r.path('base', top.base) : undefined;
  for (const m of methods) if (resolveRule(m.rule).needs.base && !base) r.fail('base', `a base model folder (method ${m.label} needs one)`, undefined);

  const mergeList: Json = top.merges ?? [taskNames];
  if (!Array.isArray(mergeList) || mergeList.length === 0) r.fail('merges', 'a list of task-name lists', mergeList);
  const merges = (mergeList as Json[]).map((group: Json, i: number) => {
    if (group === 'all') return taskNames;
    if (!Array.isArray(group) || group.length < 2) r.fail(`merges[${i}]`, "a list of two or more task names, or 'all'", group);
    return (group as Json[]).map((name: Json, k: number) => r.choice(`merges[${i}][${k}]`, name, taskNames));
  });

  const evalObj = top.evaluation === false ? undefined : (r.object('evaluation', top.evaluation, true) ?? {});
  if (evalObj) r.known('evaluation', evalObj, ['limit', 'batch_size']);
  if (evalObj) for (const t of tasks) if (!t.validation) r.fail(`tasks.${t.name}.validation`, 'a validation split path (or set evaluation: false)', undefined);

  return {
    file,
    output: r.path('output', top.output ?? 'out'),
    engine: top.engine === undefined ? 'auto' : r.choice('engine', top.engine, ENGINE_KINDS),
    maxLength: top.max_length === undefined ? 128 : r.int('max_length', top.max_length, 2),
    tasks,
    fisher: {
      batchSize: fisherObj.batch_size === undefined ? 32 : r.int('fisher.batch_size', fisherObj.batch_size, 1),
      mode: fisherObj.mode === undefined ? 'batch' : r.choice('fisher.mode', fisherObj.mode, ['batch', 'example'] as const),
      ...(fisherObj.samples !== undefined ? { samples: r.int('fisher.samples', fisherObj.samples, 1) } : {}),
      ...(fisherObj.seed !== undefined ? { seed: r.int('fisher.seed', fisherObj.seed, 0) } : {}),
    },
    fullFisher: {
      batchSize: fullObj.batch_size === undefined ? 8 : r.int('full_fisher.batch_size', fullObj.batch_size, 1),
      mode: fullObj.mode === undefined ? 'empirical' : r.choice('full_fisher.mode', fullObj.mode, ['empirical', 'expected'] as const),
      loop: fullObj.loop === undefined ? 'batched' : r.choice('full_fisher.loop', fullObj.loop, ['batched', 'classic'] as const),
      ...(fullObj.samples !== undefined ? { samples: r.int('full_fisher.samples', fullObj.samples, 1) } : {}),
      ...(fullObj.seed !== undefined ? { seed: r.int('full_fisher.seed', fullObj.seed, 0) } : {}),
    },
    methods,
    ...(base ? { base } : {}),
    merges,
    evaluation: evalObj && {
      batchSize: evalObj.batch_size === undefined ? 64 : r.int('evaluation.batch_size', evalObj.batch_size, 1),
      ...(evalObj.limit !== undefined && evalObj.limit !== null ? { limit: r.int('evaluation.limit', evalObj.limit, 1) } : {}),
    },
  };
}
