import type { Command } from 'commander';
import { writeStdout } from '../options.ts';

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('Show a stream job: running or not, per-task examples, examples/s, backlog, latest version (from OUT/status.json, OUT/state, OUT/latest).')
    .argument('<out>', "the stream job's out directory")
    .option('--json', 'print the report as JSON')
    .action(async (out: string, flags: { json?: boolean }) => {
      const { formatStreamStatus, readStreamStatus } = await import('@fisher-merge/stream-job');
      const report = await readStreamStatus(out);
      await writeStdout(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatStreamStatus(report));
    });
}
