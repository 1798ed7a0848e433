#!/usr/bin/env node
// The command runs the compiled JavaScript under dist/, built by `npm ci` (prepare) or `npm run build:cli`.
import process from 'node:process';

try {
  await import('../dist/pipelines/cli/main.js');
} catch (e) {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('dist/pipelines/cli/main.js')) throw e;
  process.stderr.write('fisher-merge: the compiled command is missing (dist/): run `npm run build:cli` (or `npm ci`) first\n');
  process.exitCode = 1;
}
