import { Option, type Command } from 'commander';
import { reportProgress } from '@fisher-merge/core';
import { DEFAULT_MAX_LENGTH } from '@fisher-merge/data/tasks';
import { addTaskOptions, positiveInt, resolveTask, writeStdout, type TaskFlags } from '../options.ts';

interface TokenizeFlags extends TaskFlags {
  model: string;
  data: string;
  limit?: number;
  maxLength: number;
}

export function registerTokenize(program: Command): void {
  const command = program
    .command('tokenize')
    .description('Print the token ids of each example as JSON lines: {"input_ids":[...],"token_type_ids":[...]} (unpadded).')
    .requiredOption('--model <dir>', 'checkpoint directory with tokenizer.json')
    .requiredOption('--data <path>', 'Parquet file, directory or glob; Arrow IPC file (.arrow) or - for an IPC stream on stdin');
  addTaskOptions(command, { labels: false })
    .option('--limit <n>', 'only the first n examples', positiveInt('--limit'))
    .addOption(new Option('--max-length <n>', 'maximum tokens per example, special tokens included').default(DEFAULT_MAX_LENGTH).argParser(positiveInt('--max-length')))
    .action(async (flags: TokenizeFlags) => {
      const [{ concatMap, lastValueFrom }, { expectedRows, FlowControl, loadTokenizer, openTaskSource, releaseCredits, taskColumns, tokenize, TOKENIZED }] = await Promise.all([import('rxjs'), import('@fisher-merge/data')]);
      const task = resolveTask(flags);
      const tokenizer = await loadTokenizer(flags.model);
      const flow = new FlowControl(4);
      const sample = flags.limit ? { kind: 'first' as const, n: flags.limit } : undefined;
      const source = openTaskSource(flags.data, { columns: taskColumns(task, { labels: false }), flow, ...(sample ? { sample } : {}) });
      const total = await expectedRows(flags.data, sample);
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
            await writeStdout(text);
            return batch.numRows;
          }),
          reportProgress({ label: 'tokenize', ...(total !== undefined ? { total } : {}) }, (rows: number) => rows),
          releaseCredits(flow, () => 1),
        ),
        { defaultValue: undefined },
      );
    });
}
