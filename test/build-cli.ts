// vitest global setup: the tests that spawn `bin/fisher-merge.mjs` run the compiled CLI, so compile it
// from the sources under test first (the same step `npm ci` runs as prepare).
import { execFileSync } from 'node:child_process';
import path from 'node:path';

export default function setup(): void {
  execFileSync(process.execPath, [path.resolve(import.meta.dirname, '../scripts/build.mjs')], { stdio: 'inherit' });
}
