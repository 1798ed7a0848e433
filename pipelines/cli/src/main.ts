import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { fileSystemErrorLine, isFileSystemError, isUserError } from '@fisher-merge/core';
import { allowNonfiniteWeights } from '@fisher-merge/checkpoint';
import { registerTokenize } from './commands/tokenize.ts';
import { registerPredict } from './commands/predict.ts';
import { registerFisher } from './commands/fisher.ts';
import { registerFisherAdd } from './commands/fisher-add.ts';
import { registerMerge } from './commands/merge.ts';
import { registerEval } from './commands/eval.ts';
import { registerRun } from './commands/run.ts';
import { registerStream, registerWorker } from './commands/stream.ts';
import { registerStatus } from './commands/status.ts';

// The version of the package that installs the `fisher-merge` command (the workspace root).
const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('fisher-merge')
  .description('Merge fine-tuned BERT-family models weighted by the Fisher information of mask nodes.')
  .version(version)
  .showHelpAfterError()
  .option('--allow-nonfinite', 'load weights holding NaN or Inf instead of refusing them (debugging)')
  .hook('preAction', (command) => allowNonfiniteWeights(command.opts<{ allowNonfinite?: boolean }>().allowNonfinite === true));

registerTokenize(program);
registerPredict(program);
registerFisher(program);
registerFisherAdd(program);
registerMerge(program);
registerEval(program);
registerRun(program);
registerStream(program);
registerWorker(program);
registerStatus(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  // Errors caused by input are one clear line; anything else is a bug and keeps its stack.
  if (isUserError(e)) process.stderr.write(`fisher-merge: ${e.message}\n`);
  else if (isFileSystemError(e)) process.stderr.write(`fisher-merge: ${fileSystemErrorLine(e)}\n`);
  else process.stderr.write(`fisher-merge: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
