import { availableParallelism } from 'node:os';
import { Option, type Command } from 'commander';
import { logEvent, reportProgress } from '@fisher-merge/core';
import { DEFAULT_MAX_LENGTH } from '@fisher-merge/data/tasks';
import { addTaskOptions, checkOutputFile, dataInputs, overwriteOption, positiveInt, resolveTask, writeStdout, type TaskFlags } from '../options.ts';

interface TokenizeFlags extends TaskFlags {
  model: string;
  data: string;
  limit?: number;
  maxLength: number;
  out?: string;
  threads: number;
  labels: boolean;
  overwrite?: boolean;
}

export function registerTokenize(program: Command): void {
  const command = program
    .command('tokenize')
    .description('Print the token ids of each example as JSON lines {"input_ids":[...],"token_type_ids":[...]} (unpadded), '
      + 'or with --out write them as an Arrow IPC file: input_ids and token_type_ids (list<int32>), label, row (the source row index).')
    .requiredOption('--model <dir>', 'checkpoint directory with tokenizer.json')
    .requiredOption('--data <path>', 'Parquet file, directory or glob; Arrow IPC file (.arrow) or - for an IPC stream on stdin');
  addTaskOptions(command, { labels: true })
    .option('--limit <n>', 'only the first n examples', positiveInt('--limit'))
    .addOption(new Option('--max-length <n>', 'maximum tokens per example, special tokens included').default(DEFAULT_MAX_LENGTH).argParser(positiveInt('--max-length')))
    .option('--out <file.arrow>', 'write an Arrow IPC file instead of JSON lines (replaced atomically)')
    .addOption(new Option('--threads <n>', 'with --out: tokenizer threads').default(availableParallelism()).argParser(positiveInt('--threads')))
    .option('--no-labels', 'with --out: unlabelled data, no label column')
    .addOption(overwriteOption('--out file'))
    .action(async (flags: TokenizeFlags) => (flags.out === undefined ? printTokens(flags) : writeTokens({ ...flags, out: flags.out })));
}

async function printTokens(flags: TokenizeFlags): Promise<void> {
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
}

async function writeTokens(flags: TokenizeFlags & { out: string }): Promise<void> {
  const [{ lastValueFrom, reduce }, { expectedRows, FlowControl, loadTokenizer, openTaskSource, releaseCredits, taskColumns, tokenizeOnThreads, TokenizerPool, writeTokenizedArrow }] = await Promise.all([import('rxjs'), import('@fisher-merge/data')]);
  checkOutputFile(flags.out, [{ what: '--model', path: flags.model }, ...dataInputs(flags.data)], flags.overwrite);
  const task = resolveTask(flags);
  // Loaded here too so that a bad tokenizer.json is one clear line before any thread starts.
  await loadTokenizer(flags.model);
  const pool = new TokenizerPool(flags.model, flags.threads);
  try {
    // Two batches per thread in flight: one encoding, one waiting, so no thread idles between batches.
    const flow = new FlowControl(2 * flags.threads);
    const sample = flags.limit ? { kind: 'first' as const, n: flags.limit } : undefined;
    const source = openTaskSource(flags.data, { columns: taskColumns(task, { labels: flags.labels }), flow, ...(sample ? { sample } : {}) });
    const total = await expectedRows(flags.data, sample);
    const started = performance.now();
    const rows = await lastValueFrom(source.pipe(
      tokenizeOnThreads(pool, task, { maxLength: flags.maxLength, labels: flags.labels }),
      reportProgress({ label: 'tokenize', ...(total !== undefined ? { total } : {}) }, (item) => item.rowIds.length),
      writeTokenizedArrow(flags.out, flags.labels ? { label: task.labelKind } : {}),
      releaseCredits(flow, () => 1),
      reduce((n, item) => n + item.rowIds.length, 0),
    ));
    logEvent('tokenize.written', { out: flags.out, rows, threads: flags.threads, seconds: Number(((performance.now() - started) / 1000).toFixed(3)) });
  } finally {
    await pool.close();
  }
}
