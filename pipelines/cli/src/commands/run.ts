import path from 'node:path';
import type { Command } from 'commander';
import type { RunResults } from '@fisher-merge/merge-job';
import { overwriteOption, writeStdout } from '../options.ts';

/** The closing lines of a run: where its table, report and kept models are. */
function outputsText(results: RunResults, saveModels: string): string {
  const { tables, report, models } = results.outputs;
  const kept = models.length === 0
    ? `none kept (save_models: ${saveModels}; set save_models: best or all to keep merged folders)`
    : `${models.length} folder${models.length === 1 ? '' : 's'} under ${path.dirname(path.dirname(models[0]!))} (save_models: ${saveModels})`;
  return [`table:  ${tables.join(', ')}`, `report: ${report}`, `models: ${kept}`, ''].join('\n');
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('Run a whole merge job from a YAML config: Fisher of each model, every merge by every method, evaluation, results table and HTML report.')
    .argument('<config>', 'YAML run configuration (see data/demo.yaml)')
    .addOption(overwriteOption("out folder's results (as the config's overwrite: true)"))
    .action(async (file: string, flags: { overwrite?: boolean }) => {
      const { readRunConfig, resultsMarkdown, runJob } = await import('@fisher-merge/merge-job');
      const read = await readRunConfig(file);
      const config = { ...read, overwrite: read.overwrite || flags.overwrite === true };
      const results = await runJob(config);
      await writeStdout(`${resultsMarkdown(config, results)}${outputsText(results, config.saveModels)}`);
    });
}
