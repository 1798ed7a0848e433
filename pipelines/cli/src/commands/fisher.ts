import { Option, type Command } from 'commander';
import { logEvent } from '@fisher-merge/core';
import { DEFAULT_MAX_LENGTH } from '@fisher-merge/data/tasks';
import type { EngineKind } from '@fisher-merge/engines';
import { addTaskOptions, checkOutputFile, dataInputs, engineOption, nonNegativeInt, overwriteOption, positiveInt, resolveModelTask, threadsOption, type TaskFlags } from '../options.ts';

interface FisherFlags extends TaskFlags {
  model: string;
  data: string;
  samples?: number;
  seed?: number;
  batchSize: number;
  mode: 'batch' | 'example';
  kind: 'mask' | 'full' | 'gram';
  fullMode: 'empirical' | 'expected';
  fullLoop: 'batched' | 'classic';
  engine: EngineKind;
  threads?: number;
  maxLength: number;
  out: string;
  overwrite?: boolean;
}

export function registerFisher(program: Command): void {
  const command = program
    .command('fisher')
    .description("Accumulate a model's Fisher information on its task data: mask nodes (the paper) or every parameter (--kind full); or its input Gram sums for RegMean (--kind gram).")
    .requiredOption('--model <dir>', 'fine-tuned Hugging Face checkpoint directory')
    .requiredOption('--data <path>', 'labelled Parquet file, directory or glob; Arrow IPC file or - for stdin');
  addTaskOptions(command, { labels: true })
    .option('--samples <n>', 'use n examples: the first n in file order (default: all)', positiveInt('--samples'))
    .option('--seed <s>', 'sample the n examples at random with this seed instead of the first n', nonNegativeInt('--seed'))
    .addOption(new Option('--batch-size <b>', 'examples per batch (batch mode: the batch whose mean-loss gradient is squared)').default(32).argParser(positiveInt('--batch-size')))
    .addOption(new Option('--mode <mode>', "mask Fisher: square each batch's gradient (the paper) or each example's (exact empirical Fisher)").choices(['batch', 'example']).default('batch'))
    .addOption(new Option('--kind <kind>', "mask-node Fisher, the full diagonal Fisher of every parameter (Matena & Raffel), or the float64 Gram sums of each merged linear's inputs over real tokens (RegMean)").choices(['mask', 'full', 'gram']).default('mask'))
    .addOption(new Option('--full-mode <mode>', 'full Fisher: gold label (empirical) or expectation under the model (expected)').choices(['empirical', 'expected']).default('empirical'))
    .addOption(new Option('--full-loop <how>', 'full Fisher: per-example gradients batched in one graph, or the classic batch-size-1 loop (the baseline the paper times)').choices(['batched', 'classic']).default('batched'))
    .addOption(engineOption())
    .addOption(threadsOption())
    .addOption(new Option('--max-length <n>', 'maximum tokens per example').default(DEFAULT_MAX_LENGTH).argParser(positiveInt('--max-length')))
    .requiredOption('--out <file>', 'output .safetensors file')
    .addOption(overwriteOption('--out file'))
    .action(async (flags: FisherFlags) => {
      checkOutputFile(flags.out, [{ what: '--model', path: flags.model }, ...dataInputs(flags.data)], flags.overwrite);
      const [{ writeFullFisher, writeGramStats, writeMaskFisher }, { computeFullFisher, computeGrams, computeMaskFisher }] = await Promise.all([import('@fisher-merge/fisher'), import('@fisher-merge/merge-job/fisher-job')]);
      const task = await resolveModelTask(flags, flags.model);
      const common = {
        modelDir: flags.model,
        data: flags.data,
        task,
        batchSize: flags.batchSize,
        maxLength: flags.maxLength,
        engine: flags.engine,
        threads: flags.threads,
        progressLabel: `fisher ${task.name}`,
        ...(flags.samples !== undefined ? { samples: flags.samples } : {}),
        ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
      };
      if (flags.kind === 'mask') {
        const result = await computeMaskFisher({ ...common, mode: flags.mode });
        await writeMaskFisher(flags.out, result.stats);
        logEvent('fisher.written', { out: flags.out, kind: 'mask', mode: flags.mode, examples: result.stats.examples, batches: result.stats.batches, seconds: Number(result.seconds.toFixed(3)), engine: result.engine });
      } else if (flags.kind === 'gram') {
        const result = await computeGrams({ ...common, progressLabel: `gram ${task.name}` });
        await writeGramStats(flags.out, result.stats);
        logEvent('fisher.written', { out: flags.out, kind: 'gram', examples: result.stats.examples, seconds: Number(result.seconds.toFixed(3)), engine: result.engine });
      } else {
        const result = await computeFullFisher({ ...common, mode: flags.fullMode, loop: flags.fullLoop });
        await writeFullFisher(flags.out, result.fisher);
        logEvent('fisher.written', { out: flags.out, kind: 'full', mode: flags.fullMode, loop: flags.fullLoop, examples: result.fisher.examples, seconds: Number(result.seconds.toFixed(3)), engine: result.engine });
      }
    });
}
