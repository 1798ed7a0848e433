import { UserError } from '@fisher-merge/core';
import { loadTokenizer, type TaskSpec, type TextTokenizer } from '@fisher-merge/data';
import { loadEncoder, type LoadedModel } from '@fisher-merge/model';

export interface TaskModel {
  model: LoadedModel;
  tokenizer: TextTokenizer;
}

/** A fine-tuned checkpoint with its tokenizer, checked to have a head that fits the task. */
export async function loadTaskModel(dir: string, task: TaskSpec): Promise<TaskModel> {
  const [model, tokenizer] = await Promise.all([loadEncoder(dir), loadTokenizer(dir)]);
  if (model.config.numLabels === 0) throw new UserError(`${dir}: the checkpoint has no classifier head (task ${task.name} needs ${task.numLabels} outputs)`);
  if (model.config.numLabels !== task.numLabels) {
    throw new UserError(`${dir}: the classifier has ${model.config.numLabels} outputs but task ${task.name} has ${task.numLabels} labels`);
  }
  return { model, tokenizer };
}
