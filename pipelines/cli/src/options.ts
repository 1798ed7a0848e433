import path from 'node:path';
import { Option, type Command } from 'commander';
import { clipped, type NamedPath, refuseExistingOutput, refuseOutputOnInputs, UserError } from '@fisher-merge/core';
import { readHfConfig } from '@fisher-merge/checkpoint';
import { customTask, glueTask, type TaskSpec } from '@fisher-merge/data/tasks';
import { numLabelsFromConfig } from '@fisher-merge/model';
import { ENGINE_KINDS } from '@fisher-merge/engines';

/** Flag parser for integers >= 1 with a message naming the flag. */
export const positiveInt = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${flag} must be an integer >= 1, got '${clipped(value)}'`);
  return n;
};

export const nonNegativeInt = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`${flag} must be an integer >= 0, got '${clipped(value)}'`);
  return n;
};

export const positiveNumber = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UserError(`${flag} must be a number > 0, got '${value}'`);
  return n;
};

export const port = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UserError(`${flag} must be a TCP port (1-65535), got '${value}'`);
  return n;
};

/** `--data` as an input an output must not land on: a file or directory (stdin and patterns name no single path). */
export function dataInputs(data: string): NamedPath[] {
  return data === '-' || /[*?]/.test(data) ? [] : [{ what: '--data', path: data }];
}

/** `--overwrite`: an existing output is replaced, once the new one is complete; without it, refused. */
export const overwriteOption = (what: string): Option =>
  new Option('--overwrite', `replace an existing ${what} (only once the new one is complete); without it an existing one is refused`);

/** `--out FILE` must not land on an input, nor replace an existing file unless --overwrite. */
export function checkOutputFile(out: string, inputs: readonly NamedPath[], overwrite: boolean | undefined): void {
  refuseOutputOnInputs({ what: '--out', path: out }, inputs);
  refuseExistingOutput({ what: '--out', path: out }, { kind: 'file', overwrite: overwrite === true, how: '--overwrite' });
}

/** Commander accumulator for repeatable options. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export interface TaskFlags {
  task?: string;
  textColumn?: string;
  textPairColumn?: string;
  labelColumn?: string;
  numLabels?: number;
}

/** The options that choose a task: a GLUE preset, or the columns of a custom one (`numLabels` defaults to `labels`). */
export function addTaskOptions(command: Command, { labels, numLabels = labels }: { labels: boolean; numLabels?: boolean }): Command {
  command
    .option('--task <name>', 'GLUE task giving the columns (sst2, cola, mrpc, qqp, stsb, qnli, rte, wnli, mnli)')
    .option('--text-column <name>', 'text column of a custom task (instead of --task)')
    .option('--text-pair-column <name>', 'second text column of a custom sentence-pair task');
  if (labels) command.option('--label-column <name>', 'label column of a custom task (default: label)');
  if (numLabels) command.option('--num-labels <n>', "classes of a custom task; 1 = regression (default: the model's, from config.json)", positiveInt('--num-labels'));
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

/**
 * The task as the model's config.json completes it: a custom task without --num-labels gets the
 * model's number of labels, and a classification task reads string labels through label2id.
 */
export async function resolveModelTask(flags: TaskFlags, modelDir: string): Promise<TaskSpec> {
  const hfConfig = await readHfConfig(modelDir);
  const label = path.join(modelDir, 'config.json');
  const numLabels = flags.textColumn !== undefined && flags.numLabels === undefined ? numLabelsFromConfig(hfConfig, label) : flags.numLabels;
  const { withModelLabels } = await import('@fisher-merge/task-model');
  return withModelLabels(resolveTask({ ...flags, ...(numLabels !== undefined ? { numLabels } : {}) }), hfConfig, modelDir);
}

/** Engine threads: onnxruntime's sums depend on the count in the last bits, so equal counts give equal bits. */
export const threadsOption = (detail = ''): Option =>
  new Option('--threads <n>', `engine threads (default: every core); results equal bit for bit between processes with the same count${detail}`).argParser(positiveInt('--threads'));

export const engineOption = (): Option => new Option('--engine <kind>', 'tensor engine (auto picks onnx when onnxruntime loads)').choices([...ENGINE_KINDS]).default('auto');

/** Writes a string to stdout and waits while a slow reader catches up. */
export async function writeStdout(text: string): Promise<void> {
  if (!process.stdout.write(text)) await new Promise((resolve) => process.stdout.once('drain', resolve));
}
