import path from 'node:path';
import type { Command } from 'commander';
import { logEvent, writeFileAtomic } from '@fisher-merge/core';
import { checkOutputFile, overwriteOption } from '../options.ts';

export function registerReport(program: Command): void {
  program
    .command('report')
    .description('Draw mask Fisher files as one self-contained HTML page: layer x head and layer x neuron heatmaps per file.')
    .argument('<fisher...>', 'mask Fisher files from `fisher-merge fisher` (or fisher-add)')
    .requiredOption('--out <file>', 'output .html file')
    .addOption(overwriteOption('--out file'))
    .action(async (files: string[], flags: { out: string; overwrite?: boolean }) => {
      checkOutputFile(flags.out, files.map((file) => ({ what: 'Fisher file', path: file })), flags.overwrite);
      const [{ readMaskFisher }, { renderReport }] = await Promise.all([import('@fisher-merge/fisher'), import('@fisher-merge/report')]);
      const fishers = await Promise.all(files.map(async (file) => ({ ...(await readMaskFisher(file)), source: file })));
      await writeFileAtomic(flags.out, renderReport({ title: 'fisher-merge: mask-node Fisher', fishers: fishers.map((f) => ({ ...f, task: f.task || path.basename(f.source) })) }));
      logEvent('report.written', { out: flags.out, fisher_files: files.length });
    });
}
