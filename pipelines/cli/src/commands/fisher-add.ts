import type { Command } from 'commander';
import { logEvent, UserError } from '@fisher-merge/core';
import { checkOutputFile, collect, overwriteOption } from '../options.ts';

export function registerFisherAdd(program: Command): void {
  program
    .command('fisher-add')
    .description('Add mask Fisher files, or Gram files (fisher --kind gram), accumulated over disjoint data (shards run anywhere, e.g. one per worker of a cluster job) into one.')
    .requiredOption('--fisher <file>', 'a mask Fisher or Gram file (repeat; all of one kind)', collect, [])
    .requiredOption('--out <file>', 'output .safetensors file')
    .addOption(overwriteOption('--out file'))
    .action(async (flags: { fisher: string[]; out: string; overwrite?: boolean }) => {
      if (flags.fisher.length < 2) throw new UserError('fisher-add needs two or more --fisher files');
      checkOutputFile(flags.out, flags.fisher.map((file) => ({ what: '--fisher', path: file })), flags.overwrite);
      const fisher = await import('@fisher-merge/fisher');
      // The first file's kind decides; every other file must be of it (its reader says so otherwise).
      const kind = fisher.isGramFile(flags.fisher[0]!) ? 'gram' : 'mask';
      const sum = <S>(parts: S[], add: (a: S, b: S) => S): S =>
        parts.slice(1).reduce((total, part, i) => {
          try {
            return add(total, part);
          } catch (e) {
            throw new UserError(`${flags.fisher[i + 1]}: ${(e as Error).message} (first file: ${flags.fisher[0]})`);
          }
        }, parts[0]!);
      if (kind === 'gram') {
        const total = sum(flags.fisher.map(fisher.readGramStats), fisher.addGramStats);
        await fisher.writeGramStats(flags.out, total);
        logEvent('fisher.added', { out: flags.out, kind, files: flags.fisher.length, examples: total.examples });
        return;
      }
      const total = sum(await Promise.all(flags.fisher.map(fisher.readMaskFisher)), fisher.addStats);
      await fisher.writeMaskFisher(flags.out, total);
      logEvent('fisher.added', { out: flags.out, kind, files: flags.fisher.length, examples: total.examples, batches: total.batches });
    });
}
