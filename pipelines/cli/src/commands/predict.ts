import { Option, type Command } from 'commander';
import { concatMap, lastValueFrom } from 'rxjs';
import { UserError } from '@fisher-merge/core';
import { loadEncoder } from '@fisher-merge/model';
import { FlowControl, loadTokenizer, releaseCredits, taskBatches } from '@fisher-merge/data';
import { openEngine, type EngineKind } from '@fisher-merge/engines';
import { fitTokenizer } from '@fisher-merge/merge-job';
import { addTaskOptions, engineOption, positiveInt, resolveTask, writeStdout, type TaskFlags } from '../options.ts';

interface PredictFlags extends TaskFlags {
  model: string;
  data: string;
  limit?: number;
  engine: EngineKind;
  batchSize: number;
}

export function registerPredict(program: Command): void {
  const command = program
    .command('predict')
    .description('Print the logits of each example as JSON lines {"logits":[...]}, in input order.')
    .requiredOption('--model <dir>', 'Hugging Face checkpoint directory (config.json, weights, tokenizer.json)')
    .requiredOption('--data <path>', 'Parquet file, directory or glob; Arrow IPC file (.arrow) or - for an IPC stream on stdin');
  addTaskOptions(command, { labels: false })
    .option('--limit <n>', 'only the first n examples', positiveInt('--limit'))
    .addOption(engineOption())
    .addOption(new Option('--batch-size <n>', 'examples per forward pass').default(32).argParser(positiveInt('--batch-size')))
    .action(async (flags: PredictFlags) => {
      const task = resolveTask(flags);
      const [model, tokenizer] = await Promise.all([loadEncoder(flags.model), loadTokenizer(flags.model)]);
      if (model.config.numLabels === 0) throw new UserError(`${flags.model}: the checkpoint has no classifier head to predict with`);
      fitTokenizer(flags.model, tokenizer, model.config);
      const engine = await openEngine(flags.engine, model.weights);
      try {
        const flow = new FlowControl(4);
        const batches = taskBatches(flags.data, {
          task,
          tokenizer,
          batchSize: flags.batchSize,
          padTokenId: model.config.padTokenId,
          labels: false,
          flow,
          ...(flags.limit ? { sample: { kind: 'first' as const, n: flags.limit } } : {}),
        });
        const C = model.config.numLabels;
        await lastValueFrom(
          batches.pipe(
            // concatMap keeps batches, and so examples, in input order.
            concatMap(async (batch) => {
              const { tokens } = batch;
              const logits = await engine.forward(tokens);
              let text = '';
              for (let b = 0; b < tokens.batchSize; b++) text += `${JSON.stringify({ logits: Array.from(logits.subarray(b * C, (b + 1) * C)) })}\n`;
              await writeStdout(text);
              return batch;
            }),
            releaseCredits(flow),
          ),
          { defaultValue: undefined },
        );
      } finally {
        await engine.dispose();
      }
    });
}
