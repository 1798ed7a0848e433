import { once } from 'node:events';
import { Option, type Command } from 'commander';
import { concatMap, lastValueFrom, type Observable } from 'rxjs';
import { UserError } from '@fisher-merge/core';
import {
  arrowIpcSource,
  customTask,
  DEFAULT_MAX_LENGTH,
  FlowControl,
  glueTask,
  loadTokenizer,
  parquetSource,
  taskColumns,
  tokenize,
  TOKENIZED,
  type SourceBatch,
  type TaskSpec,
} from '@fisher-merge/data';

interface TokenizeFlags {
  model: string;
  data: string;
  task?: string;
  textColumn?: string;
  textPairColumn?: string;
  limit?: number;
  maxLength: number;
}

const positiveInt = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${flag} must be an integer >= 1, got '${value}'`);
  return n;
};

/** Arrow IPC by extension or `-` (stdin); anything else is read as Parquet (file, directory or glob). */
function isArrowIpc(data: string): boolean {
  return data === '-' || /\.(arrow|arrows|ipc|feather)$/i.test(data);
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description('Print the token ids of each example as JSON lines: {"input_ids":[...],"token_type_ids":[...]} (unpadded).')
    .requiredOption('--model <dir>', 'checkpoint directory with tokenizer.json')
    .requiredOption('--data <path>', 'Parquet file, directory or glob; Arrow IPC file (.arrow) or - for an IPC stream on stdin')
    .option('--task <name>', 'GLUE task giving the text columns (sst2, cola, mrpc, qqp, stsb, qnli, rte, wnli, mnli)')
    .option('--text-column <name>', 'text column of a custom task (instead of --task)')
    .option('--text-pair-column <name>', 'second text column of a custom sentence-pair task')
    .option('--limit <n>', 'only the first n examples', positiveInt('--limit'))
    .addOption(new Option('--max-length <n>', 'maximum tokens per example, special tokens included').default(DEFAULT_MAX_LENGTH).argParser(positiveInt('--max-length')))
    .action(async (flags: TokenizeFlags) => {
      const task = resolveTask(flags);
      const tokenizer = await loadTokenizer(flags.model);
      const flow = new FlowControl(4);
      const sourceOptions = { columns: taskColumns(task, { labels: false }), flow, ...(flags.limit ? { sample: { kind: 'first' as const, n: flags.limit } } : {}) };
      const source: Observable<SourceBatch> = isArrowIpc(flags.data) ? arrowIpcSource(flags.data, sourceOptions) : parquetSource(flags.data, sourceOptions);
      await lastValueFrom(
        source.pipe(
          tokenize(tokenizer, task, { maxLength: flags.maxLength, labels: false }),
          concatMap(async ({ batch }) => {
            const ids = batch.getChild(TOKENIZED.inputIds)!;
            const typeIds = batch.getChild(TOKENIZED.tokenTypeIds)!;
            let text = '';
            for (let i = 0; i < batch.numRows; i++) {
              text += `{"input_ids":[${ids.get(i)!.toArray().join(',')}],"token_type_ids":[${typeIds.get(i)!.toArray().join(',')}]}\n`;
            }
            // Wait for a slow reader of stdout before taking the next batch.
            if (!process.stdout.write(text)) await once(process.stdout, 'drain');
            flow.release();
          }),
        ),
        { defaultValue: undefined },
      );
    });
}

function resolveTask(flags: TokenizeFlags): TaskSpec {
  if (flags.textColumn !== undefined) {
    if (flags.task !== undefined) throw new UserError('give either --task or --text-column, not both');
    return customTask({ textColumn: flags.textColumn, ...(flags.textPairColumn !== undefined ? { textPairColumn: flags.textPairColumn } : {}) });
  }
  if (flags.textPairColumn !== undefined) throw new UserError('--text-pair-column needs --text-column');
  if (flags.task === undefined) throw new UserError('give --task NAME or --text-column NAME');
  return glueTask(flags.task);
}
