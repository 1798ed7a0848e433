import { Option, type Command } from 'commander';
import { UserError } from '@fisher-merge/core';
import { customTask, glueTask, type TaskSpec } from '@fisher-merge/data';
import { ENGINE_KINDS } from '@fisher-merge/engines';

/** Flag parser for integers >= 1 with a message naming the flag. */
export const positiveInt = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${flag} must be an integer >= 1, got '${value}'`);
  return n;
};

export const nonNegativeInt = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`${flag} must be an integer >= 0, got '${value}'`);
  return n;
};

/** Commander accumulator for repeatable options. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export interface TaskFlags {
  task?: string;
  textColumn?: string;
  textPairColumn?: string;
  labelColumn?: string;
  numLabels?: number;
}

/** The options that choose a task: a GLUE preset, or the columns of a custom one. */
export function addTaskOptions(command: Command, { labels }: { labels: boolean }): Command {
  command
    .option('--task <name>', 'GLUE task giving the columns (sst2, cola, mrpc, qqp, stsb, qnli, rte, wnli, mnli)')
    .option('--text-column <name>', 'text column of a custom task (instead of --task)')
    .option('--text-pair-column <name>', 'second text column of a custom sentence-pair task');
  if (labels) {
    command
      .option('--label-column <name>', 'label column of a custom task (default: label)')
      .option('--num-labels <n>', 'classes of a custom task; 1 = regression (default: 2)', positiveInt('--num-labels'));
  }
  return command;
}

export function resolveTask(flags: TaskFlags): TaskSpec {
  if (flags.textColumn !== undefined) {
    if (flags.task !== undefined) throw new UserError('give either --task or --text-column, not both');
    return customTask({
      textColumn: flags.textColumn,
      ...(flags.textPairColumn !== undefined ? { textPairColumn: flags.textPairColumn } : {}),
      ...(flags.labelColumn !== undefined ? { labelColumn: flags.labelColumn } : {}),
      ...(flags.numLabels !== undefined ? { numLabels: flags.numLabels } : {}),
    });
  }
  if (flags.textPairColumn !== undefined || flags.labelColumn !== undefined) throw new UserError('--text-pair-column and --label-column need --text-column');
  if (flags.task === undefined) throw new UserError('give --task NAME or --text-column NAME');
  return glueTask(flags.task);
}

export const engineOption = (): Option => new Option('--engine <kind>', 'tensor engine (auto picks onnx when onnxruntime loads)').choices([...ENGINE_KINDS]).default('auto');

/** Writes a string to stdout and waits while a slow reader catches up. */
export async function writeStdout(text: string): Promise<void> {
  if (!process.stdout.write(text)) await new Promise((resolve) => process.stdout.once('drain', resolve));
}
