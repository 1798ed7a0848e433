import { once } from 'node:events';
import { Option, type Command } from 'commander';
import { concatMap, lastValueFrom, type Observable } from 'rxjs';
import { UserError } from '@fisher-merge/core';
import { loadEncoder } from '@fisher-merge/model';
import { arrowIpcSource, FlowControl, glueTask, loadTokenizer, padBatches, parquetSource, taskColumns, tokenize, type SourceBatch } from '@fisher-merge/data';
import { ENGINE_KINDS, openEngine, type EngineKind } from '@fisher-merge/engines';

interface PredictFlags {
  model: string;
  data: string;
  task: string;
  limit?: number;
  engine: EngineKind;
  batchSize: number;
}

const positiveInt = (flag: string) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${flag} must be an integer >= 1, got '${value}'`);
  return n;
};

export function registerPredict(program: Command): void {
  program
    .command('predict')
    .description('Print the logits of each example as JSON lines {"logits":[...]}, in input order.')
    .requiredOption('--model <dir>', 'Hugging Face checkpoint directory (config.json, weights, tokenizer.json)')
    .requiredOption('--data <path>', 'Parquet file, directory or glob; Arrow IPC file (.arrow) or - for an IPC stream on stdin')
    .requiredOption('--task <name>', 'GLUE task giving the text columns (sst2, cola, mrpc, qqp, stsb, qnli, rte, wnli, mnli)')
    .option('--limit <n>', 'only the first n examples', positiveInt('--limit'))
    .addOption(new Option('--engine <kind>', 'tensor engine').choices([...ENGINE_KINDS]).default('auto'))
    .addOption(new Option('--batch-size <n>', 'examples per forward pass').default(32).argParser(positiveInt('--batch-size')))
    .action(async (flags: PredictFlags) => {
      const task = glueTask(flags.task);
      const [model, tokenizer] = await Promise.all([loadEncoder(flags.model), loadTokenizer(flags.model)]);
      if (model.config.numLabels === 0) throw new UserError(`${flags.model}: the checkpoint has no classifier head to predict with`);
      const engine = await openEngine(flags.engine, model.weights);
      try {
        const flow = new FlowControl(4);
        const sourceOptions = { columns: taskColumns(task, { labels: false }), flow, ...(flags.limit ? { sample: { kind: 'first' as const, n: flags.limit } } : {}) };
        const ipc = flags.data === '-' || /\.(arrow|arrows|ipc|feather)$/i.test(flags.data);
        const source: Observable<SourceBatch> = ipc ? arrowIpcSource(flags.data, sourceOptions) : parquetSource(flags.data, sourceOptions);
        const C = model.config.numLabels;
        await lastValueFrom(
          source.pipe(
            tokenize(tokenizer, task, { labels: false }),
            padBatches({ batchSize: flags.batchSize, padTokenId: model.config.padTokenId, flow }),
            // concatMap keeps batches, and so examples, in input order.
            concatMap(async ({ tokens, completedSources }) => {
              const logits = await engine.forward(tokens);
              let text = '';
              for (let b = 0; b < tokens.batchSize; b++) text += `{"logits":[${Array.from(logits.subarray(b * C, (b + 1) * C)).join(',')}]}\n`;
              if (!process.stdout.write(text)) await once(process.stdout, 'drain');
              flow.release(completedSources.length);
            }),
          ),
          { defaultValue: undefined },
        );
      } finally {
        await engine.dispose();
      }
    });
}
