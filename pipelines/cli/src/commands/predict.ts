import { Option, type Command } from 'commander';
import path from 'node:path';
import { reportProgress, UserError } from '@fisher-merge/core';
import { labelsFromConfig, loadEncoder } from '@fisher-merge/model';
import { openEngine, type EngineKind } from '@fisher-merge/engines';
import { argmax, softmax } from '@fisher-merge/eval';
import { addTaskOptions, engineOption, positiveInt, resolveModelTask, threadsOption, writeStdout, type TaskFlags } from '../options.ts';

interface PredictFlags extends TaskFlags {
  model: string;
  data: string;
  limit?: number;
  engine: EngineKind;
  threads?: number;
  batchSize: number;
  gold?: boolean;
}

export function registerPredict(program: Command): void {
  const command = program
    .command('predict')
    .description(
      'Print one JSON line per example, in input order: {"row","label","probabilities","logits"} (label names from config.json id2label); ' +
        'a regression model prints {"row","value"}.',
    )
    .requiredOption('--model <dir>', 'Hugging Face checkpoint directory (config.json, weights, tokenizer.json)')
    .requiredOption('--data <path>', 'Parquet file, directory or glob; Arrow IPC file (.arrow) or - for an IPC stream on stdin');
  addTaskOptions(command, { labels: true, numLabels: false })
    .option('--limit <n>', 'only the first n examples', positiveInt('--limit'))
    .option('--gold', "also print each row's label from the task's label column as \"gold\" (class indices, or strings through config.json label2id)")
    .addOption(engineOption())
    .addOption(threadsOption())
    .addOption(new Option('--batch-size <n>', 'examples per forward pass').default(32).argParser(positiveInt('--batch-size')))
    .action(async (flags: PredictFlags) => {
      const [{ concatMap, lastValueFrom }, { expectedRows, FlowControl, loadTokenizer, releaseCredits, taskBatches }, { checkTaskHead, fitTokenizer }] = await Promise.all([
        import('rxjs'), import('@fisher-merge/data'), import('@fisher-merge/task-model'),
      ]);
      const task = await resolveModelTask(flags, flags.model);
      const [model, tokenizer] = await Promise.all([loadEncoder(flags.model), loadTokenizer(flags.model)]);
      if (model.config.numLabels === 0) throw new UserError(`${flags.model}: the checkpoint has no classifier head to predict with`);
      const gold = flags.gold === true;
      if (gold) checkTaskHead(flags.model, model.config, task);
      fitTokenizer(flags.model, tokenizer, model.config);
      const names = labelsFromConfig(model.hfConfig, path.join(flags.model, 'config.json')).names;
      const regression = model.config.problemType === 'regression';
      const engine = await openEngine(flags.engine, model.weights, { threads: flags.threads });
      try {
        const flow = new FlowControl(4, { grow: true });
        const sample = flags.limit ? { kind: 'first' as const, n: flags.limit } : undefined;
        const batches = taskBatches(flags.data, {
          task,
          tokenizer,
          batchSize: flags.batchSize,
          padTokenId: model.config.padTokenId,
          labels: gold,
          flow,
          ...(sample ? { sample } : {}),
        });
        const total = await expectedRows(flags.data, sample);
        const C = model.config.numLabels;
        await lastValueFrom(
          batches.pipe(
            // concatMap keeps batches, and so examples, in input order.
            concatMap(async (batch) => {
              const { tokens } = batch;
              const logits = await engine.forward(tokens);
              let text = '';
              for (let b = 0; b < tokens.batchSize; b++) {
                const row = Array.from(logits.subarray(b * C, (b + 1) * C));
                const line: Record<string, unknown> = { row: tokens.rowIds![b] };
                if (regression) line.value = row[0];
                else Object.assign(line, { label: names[argmax(row)], probabilities: softmax(row), logits: row });
                if (gold) line.gold = regression ? tokens.labels![b] : names[tokens.labels![b]!];
                text += `${JSON.stringify(line)}\n`;
              }
              await writeStdout(text);
              return batch;
            }),
            releaseCredits(flow),
            reportProgress({ label: 'predict', ...(total !== undefined ? { total } : {}) }, (batch) => batch.tokens.batchSize),
          ),
          { defaultValue: undefined },
        );
      } finally {
        await engine.dispose();
      }
    });
}
