import { z } from 'zod';
import { UserError } from '@fisher-merge/core';
import { customTask, DEFAULT_MAX_LENGTH, GLUE_TASKS, glueTask, type TaskSpec } from '@fisher-merge/data';
import { ENGINE_KINDS } from '@fisher-merge/engines';
import { resolveParams, resolveRule, type Params } from '@fisher-merge/merge';
import { choice, expected, flag, int, mapping, section, text } from './schema.ts';

/**
 * The key names every config shares (run, stream, merge): one vocabulary, one definition each.
 * Sections are plain shapes so a config extends them by spreading (`{ ...FISHER_KEYS, seed }`).
 */
export const ENGINE = choice(ENGINE_KINDS as readonly ['auto', 'onnx', 'tfjs']).default('auto');
export const MAX_LENGTH = int(2).default(DEFAULT_MAX_LENGTH);
/** Output directory; `out` everywhere (`output` was the run config's older name). */
export const OUT = text('a directory path');
/** Replace an `out` that exists and is not empty (only once the new output is complete); without it such an `out` is refused. */
export const OVERWRITE = flag().default(false);

/** Mask-node Fisher: how gradients are squared, and the batch size. */
export const FISHER_KEYS = {
  mode: choice(['batch', 'example']).default('batch'),
  batch_size: int(1).default(32),
};
/** Which training examples a one-shot Fisher reads: the first `samples`, or a seeded sample of them. */
export const SAMPLE_KEYS = {
  samples: int(1).optional(),
  seed: int(0).optional(),
};
/** Full diagonal Fisher (Matena & Raffel): examples, batch size, expectation and loop. */
export const FULL_FISHER_SECTION = section({
  ...SAMPLE_KEYS,
  batch_size: int(1).default(8),
  mode: choice(['empirical', 'expected']).default('empirical'),
  loop: choice(['batched', 'classic']).default('batched'),
}).prefault({});

/** Input Gram statistics (RegMean): examples and batch size (padding is excluded, so batches change only the cost). */
export const GRAM_SECTION = section({ ...SAMPLE_KEYS, batch_size: int(1).default(32) }).prefault({});

/** What a dataset's columns mean: a GLUE preset (`task`), or a custom task named by `name`. */
export const TASK_KEYS = {
  name: text().optional(),
  task: choice(Object.keys(GLUE_TASKS) as [string, ...string[]]).optional(),
  text_column: text().optional(),
  text_pair_column: text().optional(),
  label_column: text().optional(),
  num_labels: int(1).optional(),
};
export const TASK_RENAMED = { glue_task: "renamed to 'task' (a GLUE preset)" };
type TaskKeys = { [K in keyof typeof TASK_KEYS]?: z.output<(typeof TASK_KEYS)[K]> };

/** The task an entry describes; throws UserError when the keys do not make one. */
export function taskSpec(entry: TaskKeys): TaskSpec {
  const { name, task, text_column: textColumn } = entry;
  if ((task === undefined) === (textColumn === undefined)) throw new UserError("needs 'task' (a GLUE preset) or 'text_column' (and 'name': a custom task), not both");
  if (task !== undefined) {
    for (const k of ['text_pair_column', 'label_column', 'num_labels'] as const) {
      if (entry[k] !== undefined) throw new UserError(`'${k}' describes a custom task; leave it out with 'task: ${task}'`);
    }
    return { ...glueTask(task), ...(name ? { name } : {}) };
  }
  if (name === undefined) throw new UserError("a custom task (text_column) needs a 'name'");
  return customTask({
    name,
    textColumn: textColumn!,
    ...(entry.text_pair_column !== undefined ? { textPairColumn: entry.text_pair_column } : {}),
    ...(entry.label_column !== undefined ? { labelColumn: entry.label_column } : {}),
    ...(entry.num_labels !== undefined ? { numLabels: entry.num_labels } : {}),
  });
}

/** An entry with task keys, plus its `spec` and its `name` (the preset's unless given). */
export function withTask<T extends TaskKeys>(entry: T): T & { name: string; spec: TaskSpec } {
  const spec = taskSpec(entry);
  return { ...entry, name: spec.name, spec };
}

/** A non-empty list of task entries with distinct names. */
export function taskList<T extends z.ZodType<{ name: string }>>(entry: T) {
  return z.array(entry, expected('a non-empty list of task entries')).min(1, expected('a non-empty list of task entries')).superRefine((tasks, ctx) => {
    const names = tasks.map((t) => t.name);
    names.forEach((n, i) => {
      if (names.indexOf(n) !== i) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `task name '${n}' is used twice; give each task a distinct 'name'`, input: n });
    });
  });
}

/** A merge rule's parameters, checked against its declared ones (defaults filled). */
export function ruleParams(rule: string, given: Record<string, unknown>): { rule: string; params: Params } {
  const resolved = resolveRule(rule);
  return { rule: resolved.name, params: resolveParams(resolved, given as Params) };
}

/** `merge_method` and its `parameters`, as in mergekit. */
export const METHOD_KEYS = {
  merge_method: text('a merge method name'),
  parameters: mapping().prefault({}),
};
export const METHOD_RENAMED = { name: "renamed to 'merge_method'", params: "renamed to 'parameters'" };
export const BASE_RENAMED = { base: "renamed to 'base_model'" };
