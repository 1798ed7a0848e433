import type { Command } from 'commander';
import { logEvent, UserError } from '@fisher-merge/core';
import { checkOutputFile, collect, overwriteOption } from '../options.ts';

export function registerFisherAdd(program: Command): void {
  program
    .command('fisher-add')
    .description('Add mask Fisher files accumulated over disjoint data (shards run anywhere, e.g. one per worker of a cluster job) into one.')
    .requiredOption('--fisher <file>', 'a mask Fisher file (repeat)', collect, [])
    .requiredOption('--out <file>', 'output .safetensors file')
    .addOption(overwriteOption('--out file'))
    .action(async (flags: { fisher: string[]; out: string; overwrite?: boolean }) => {
      if (flags.fisher.length < 2) throw new UserError('fisher-add needs two or more --fisher files');
      checkOutputFile(flags.out, flags.fisher.map((file) => ({ what: '--fisher', path: file })), flags.overwrite);
      const { addStats, readMaskFisher, writeMaskFisher } = await import('@fisher-merge/fisher');
      const parts = await Promise.all(flags.fisher.map(readMaskFisher));
      let total = parts[0]!;
      parts.slice(1).forEach((part, i) => {
        try {
          total = addStats(total, part);
        } catch (e) {
          throw new UserError(`${flags.fisher[i + 1]}: ${(e as Error).message} (first file: ${flags.fisher[0]})`);
        }
      });
      await writeMaskFisher(flags.out, total);
      logEvent('fisher.added', { out: flags.out, files: flags.fisher.length, examples: total.examples, batches: total.batches });
    });
}
