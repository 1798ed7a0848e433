import { clipped, shown, UserError } from '@fisher-merge/core';

export type LabelKind = 'class' | 'regression';

/** What a dataset's columns mean for one task. */
export interface TaskSpec {
  name: string;
  textColumn: string;
  /** Second text of sentence-pair tasks. */
  textPairColumn?: string;
  labelColumn: string;
  labelKind: LabelKind;
  /** Number of classes; 1 for regression. */
  numLabels: number;
  /** Class names by label index (classification only). */
  labelNames?: string[];
  /** Class index of each string label (config.json label2id): a label column of strings is read through it. */
  labelIds?: Readonly<Record<string, number>>;
}

function classification(name: string, text: string, pair: string | undefined, labelNames: string[]): TaskSpec {
  return { name, textColumn: text, ...(pair ? { textPairColumn: pair } : {}), labelColumn: 'label', labelKind: 'class', numLabels: labelNames.length, labelNames };
}

/** GLUE tasks with the Hugging Face `glue` dataset's column names and label order. */
/** Tokens per example, special tokens included, unless a command or config says otherwise. */
export const DEFAULT_MAX_LENGTH = 128;

export const GLUE_TASKS = {
  sst2: classification('sst2', 'sentence', undefined, ['negative', 'positive']),
  cola: classification('cola', 'sentence', undefined, ['unacceptable', 'acceptable']),
  mrpc: classification('mrpc', 'sentence1', 'sentence2', ['not_equivalent', 'equivalent']),
  qqp: classification('qqp', 'question1', 'question2', ['not_duplicate', 'duplicate']),
  stsb: { name: 'stsb', textColumn: 'sentence1', textPairColumn: 'sentence2', labelColumn: 'label', labelKind: 'regression', numLabels: 1 },
  qnli: classification('qnli', 'question', 'sentence', ['entailment', 'not_entailment']),
  rte: classification('rte', 'sentence1', 'sentence2', ['entailment', 'not_entailment']),
  wnli: classification('wnli', 'sentence1', 'sentence2', ['not_entailment', 'entailment']),
  mnli: classification('mnli', 'premise', 'hypothesis', ['entailment', 'neutral', 'contradiction']),
} as const satisfies Record<string, TaskSpec>;

export type GlueTaskName = keyof typeof GLUE_TASKS;

export function glueTask(name: string): TaskSpec {
  const task = (GLUE_TASKS as Record<string, TaskSpec>)[name.toLowerCase()];
  if (!task) throw new UserError(`unknown task '${name}' (known: ${Object.keys(GLUE_TASKS).join(', ')}; or give --text-column)`);
  return { ...task, ...(task.labelNames ? { labelNames: [...task.labelNames] } : {}) };
}

/** A task described by flags or config; `numLabels` 1 means regression unless `labelKind` says otherwise. */
export interface CustomTaskOptions {
  name?: string;
  textColumn: string;
  textPairColumn?: string;
  labelColumn?: string;
  numLabels?: number;
  labelKind?: LabelKind;
  labelNames?: string[];
}

export function customTask(options: CustomTaskOptions): TaskSpec {
  const { textColumn, textPairColumn, labelColumn = 'label', labelNames } = options;
  const numLabels = options.numLabels ?? labelNames?.length ?? 2;
  const labelKind = options.labelKind ?? (numLabels === 1 ? 'regression' : 'class');
  const columnName = (flag: string, value: unknown): void => {
    if (typeof value !== 'string' || value.trim() === '') throw new UserError(`${flag} must be a non-empty column name, got ${shown(value)}`);
  };
  columnName('--text-column', textColumn);
  if (textPairColumn !== undefined) columnName('--text-pair-column', textPairColumn);
  columnName('--label-column', labelColumn);
  if (textPairColumn === textColumn) throw new UserError(`--text-pair-column must differ from --text-column ('${textColumn}')`);
  if (labelColumn === textColumn || labelColumn === textPairColumn) throw new UserError(`--label-column '${labelColumn}' is also a text column`);
  if (!Number.isInteger(numLabels) || numLabels < 1) throw new UserError(`--num-labels must be an integer >= 1, got ${numLabels}`);
  if (labelKind !== 'class' && labelKind !== 'regression') throw new UserError(`label kind must be 'class' or 'regression', got '${clipped(String(labelKind))}'`);
  if (labelKind === 'regression' && numLabels !== 1) throw new UserError(`a regression task has one label, got --num-labels ${numLabels}`);
  if (labelKind === 'class' && numLabels < 2) throw new UserError(`a classification task needs --num-labels >= 2, got ${numLabels}`);
  if (labelNames !== undefined && (labelKind !== 'class' || labelNames.length !== numLabels)) {
    throw new UserError(`label names (${labelNames.length}) must match --num-labels ${numLabels} of a classification task`);
  }
  return {
    name: options.name ?? 'custom',
    textColumn,
    ...(textPairColumn !== undefined ? { textPairColumn } : {}),
    labelColumn,
    labelKind,
    numLabels,
    ...(labelNames ? { labelNames: [...labelNames] } : {}),
  };
}

/** Columns a pipeline must read for `task` (projection). */
export function taskColumns(task: TaskSpec, options: { labels?: boolean } = {}): string[] {
  return [task.textColumn, ...(task.textPairColumn ? [task.textPairColumn] : []), ...(options.labels === false ? [] : [task.labelColumn])];
}
