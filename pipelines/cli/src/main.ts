import { readFileSync } from 'node:fs';
import { format } from 'node:util';
import { fileSystemErrorLine, isFileSystemError, isUserError, logEvent } from '@fisher-merge/core';
import { allowNonfiniteWeights } from '@fisher-merge/checkpoint';
import { CliCommand, oneLineUsage } from './command.ts';
import { registerTokenize } from './commands/tokenize.ts';
import { registerPredict } from './commands/predict.ts';
import { registerFisher } from './commands/fisher.ts';
import { registerFisherAdd } from './commands/fisher-add.ts';
import { registerMerge } from './commands/merge.ts';
import { registerEval } from './commands/eval.ts';
import { registerRun } from './commands/run.ts';
import { registerStream, registerWorker } from './commands/stream.ts';
import { registerStatus } from './commands/status.ts';
import { registerReport } from './commands/report.ts';

// The version of the package that installs the `fisher-merge` command (the workspace root).
const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

// Off a terminal stderr is JSON lines only (log collectors parse every line): usage errors, library
// warnings and Node's process warnings become log lines too.
const tty = Boolean(process.stderr.isTTY);
if (!tty) {
  // A library's console output is not the command's error line, whatever its level.
  console.warn = (...args: unknown[]) => logEvent('console', { level: 'warn', message: format(...args) });
  console.error = (...args: unknown[]) => logEvent('console', { level: 'error', message: format(...args) });
  process.removeAllListeners('warning');
  process.on('warning', (w) => logEvent('warning', { message: `${w.name}: ${w.message}` }));
}

const program = new CliCommand('fisher-merge')
  .description('Merge fine-tuned BERT-family models weighted by the Fisher information of mask nodes.')
  .version(version)
  // Off a terminal the error line says it all; the help would be a page inside one JSON line.
  .showHelpAfterError(tty)
  .configureOutput({
    writeErr: (text) => (tty ? process.stderr.write(text) : text.trim() && logEvent('usage', { message: text.trimEnd() })),
    outputError: (text, write) => (tty ? write(oneLineUsage(text)) : logEvent('error', { message: oneLineUsage(text).trim().replace(/^error: /, '') })),
  })
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
registerReport(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  // Errors caused by input are one clear line (a JSON line off a terminal, its `message` that line);
  // anything else is a bug and keeps its stack.
  const known = isUserError(e) ? e.message : isFileSystemError(e) ? fileSystemErrorLine(e) : undefined;
  const message = known ?? `internal error: ${e instanceof Error ? e.message : String(e)}`;
  const stack = known === undefined && e instanceof Error ? e.stack : undefined;
  // On a terminal, from the line's start, clearing it: the error replaces a meter left mid-line.
  if (tty) process.stderr.write(`\r\x1b[2Kfisher-merge: ${stack ? `internal error: ${stack}` : message}\n`);
  else logEvent('error', { message, ...(stack ? { stack } : {}) });
  process.exitCode = 1;
});
