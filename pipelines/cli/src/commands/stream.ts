import type { Command } from 'commander';
import { loadStreamConfig, runStreamJob } from '@fisher-merge/stream-job';
import { nonNegativeInt } from '../options.ts';

interface StreamFlags {
  exitWhenIdle?: number;
}

export function registerStream(program: Command): void {
  program
    .command('stream')
    .description('Continual merge: accumulate mask Fisher statistics from task data as it arrives and publish merged model versions (OUT/versions/N, OUT/latest). '
      + 'SIGHUP or OUT/control/publish publishes now; SIGINT, SIGTERM or OUT/control/stop stop after a checkpoint.')
    .argument('<config>', 'YAML config: tasks (task, model, watch DIR | ipc PATH|-), fisher, publish, out')
    .option('--exit-when-idle <ms>', 'drain: treat each input as finished once nothing new arrived for ms, count the last partial batch, publish and exit', nonNegativeInt('--exit-when-idle'))
    .action(async (file: string, flags: StreamFlags) => {
      const config = await loadStreamConfig(file);
      await runStreamJob(config, { handleSignals: true, ...(flags.exitWhenIdle !== undefined ? { exitWhenIdleMs: flags.exitWhenIdle } : {}) });
    });
}
