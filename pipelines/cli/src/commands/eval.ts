import { Option, type Command } from 'commander';
import type { EngineKind } from '@fisher-merge/engines';
import { addTaskOptions, engineOption, positiveInt, resolveModelTask, threadsOption, writeStdout, type TaskFlags } from '../options.ts';

interface EvalFlags extends TaskFlags {
  model: string;
  data: string;
  limit?: number;
  engine: EngineKind;
  threads?: number;
  batchSize: number;
  json?: boolean;
}

export function registerEval(program: Command): void {
  const command = program
    .command('eval')
    .description("Score a fine-tuned model on a labelled split with the task's GLUE metrics.")
    .requiredOption('--model <dir>', 'fine-tuned Hugging Face checkpoint directory')
    .requiredOption('--data <path>', 'labelled Parquet file, directory or glob; Arrow IPC file or - for stdin');
  addTaskOptions(command, { labels: true })
    .option('--limit <n>', 'only the first n examples', positiveInt('--limit'))
    .addOption(engineOption())
    .addOption(threadsOption())
    .addOption(new Option('--batch-size <n>', 'examples per forward pass').default(64).argParser(positiveInt('--batch-size')))
    .option('--json', 'print exactly one JSON object {"task","examples","metrics"}')
    .action(async (flags: EvalFlags) => {
      const { evaluateModel } = await import('@fisher-merge/eval/evaluate');
      const result = await evaluateModel({
        modelDir: flags.model,
        data: flags.data,
        task: await resolveModelTask(flags, flags.model),
        engine: flags.engine,
        threads: flags.threads,
        batchSize: flags.batchSize,
        ...(flags.limit ? { limit: flags.limit } : {}),
        progressLabel: 'eval',
      });
      if (flags.json) await writeStdout(`${JSON.stringify(result)}\n`);
      else await writeStdout(`${result.task} (${result.examples} examples): ${Object.entries(result.metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}\n`);
    });
}
