import path from 'node:path';
import { UserError } from '@fisher-merge/core';
import { customTask, loadTokenizer, type TaskSpec, type TextTokenizer } from '@fisher-merge/data';
import { readHfConfig, type HfConfig } from '@fisher-merge/checkpoint';
import { labelsFromConfig, loadEncoder, numLabelsFromConfig, tokenLimits, type EncoderConfig, type LoadedModel, type LoadOptions } from '@fisher-merge/model';

export interface ModelAndTokenizer {
  model: LoadedModel;
  tokenizer: TextTokenizer;
}

/**
 * A fine-tuned checkpoint with its tokenizer, checked to have a head that fits the task and a
 * tokenizer (and `maxLength`, when given) that fit its embedding tables; and the task reading
 * string labels through the model's label2id.
 */
export async function loadTaskModel(dir: string, task: TaskSpec, options: { maxLength?: number } & LoadOptions = {}): Promise<ModelAndTokenizer & { task: TaskSpec }> {
  const [model, tokenizer] = await Promise.all([loadEncoder(dir, options), loadTokenizer(dir)]);
  checkTaskHead(dir, model.config, task);
  fitTokenizer(dir, tokenizer, model.config, options.maxLength);
  return { model, tokenizer, task: withModelLabels(task, model.hfConfig, dir) };
}

/** A config entry's task keys (libs/config's TASK_KEYS, as parsed) and the task they make. */
interface TaskEntry {
  text_column?: string | undefined;
  num_labels?: number | undefined;
  spec: TaskSpec;
}

/**
 * A config entry of a custom task without `num_labels` takes its model's label count from
 * config.json, as the CLI's --text-column does (a count of 1 makes it a regression task); every
 * other entry is returned as is.
 */
export async function withModelLabelCount<T extends TaskEntry>(entry: T, modelDir: string): Promise<T> {
  if (entry.text_column === undefined || entry.num_labels !== undefined) return entry;
  const numLabels = numLabelsFromConfig(await readHfConfig(modelDir), path.join(modelDir, 'config.json'));
  const { name, textColumn, textPairColumn, labelColumn } = entry.spec;
  return { ...entry, num_labels: numLabels, spec: customTask({ name, textColumn, ...(textPairColumn !== undefined ? { textPairColumn } : {}), labelColumn, numLabels }) };
}

/** A classification task that reads a label column of strings through config.json label2id. */
export function withModelLabels(task: TaskSpec, hfConfig: HfConfig, dir: string): TaskSpec {
  return task.labelKind === 'class' ? { ...task, labelIds: labelsFromConfig(hfConfig, path.join(dir, 'config.json')).ids } : task;
}

/** Checks a tokenizer's ids (and a max length) against the model's tables; the tokenizer then refuses longer rows. */
export function fitTokenizer(dir: string, tokenizer: TextTokenizer, config: EncoderConfig, maxLength?: number): TextTokenizer {
  tokenizer.fitTo(tokenLimits(config, path.join(dir, 'config.json')));
  if (maxLength !== undefined) tokenizer.checkMaxLength(maxLength);
  return tokenizer;
}

/** A UserError unless the checkpoint's classifier has one output per label of the task. */
export function checkTaskHead(dir: string, config: EncoderConfig, task: TaskSpec): void {
  if (config.numLabels === 0) throw new UserError(`${dir}: the checkpoint has no classifier head (task ${task.name} needs ${task.numLabels} outputs)`);
  if (config.numLabels !== task.numLabels) {
    throw new UserError(`${dir}: the classifier has ${config.numLabels} outputs but task ${task.name} has ${task.numLabels} labels`);
  }
}
