import type { Command } from 'commander';
import { writeStdout } from '../options.ts';

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('Run a whole merge job from a YAML config: Fisher of each model, every merge by every method, evaluation, results table.')
    .argument('<config>', 'YAML run configuration (see data/demo.yaml)')
    .action(async (file: string) => {
      const { readRunConfig, resultsMarkdown, runJob } = await import('@fisher-merge/merge-job');
      const config = await readRunConfig(file);
      const results = await runJob(config);
      await writeStdout(resultsMarkdown(config, results));
    });
}
