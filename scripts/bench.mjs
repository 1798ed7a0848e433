#!/usr/bin/env node
// Runs every benchmark under bench/ (or those named with --only a,b) one after another.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

const only = (() => {
  const i = process.argv.indexOf('--only');
  return i >= 0 ? process.argv[i + 1].split(',') : undefined;
})();
const benches = readdirSync(new URL('../bench/', import.meta.url))
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => !only || only.some((name) => f.startsWith(name)))
  .sort();
let failures = 0;
for (const file of benches) {
  console.log(`\n=== bench/${file}`);
  const run = spawnSync('npx', ['tsx', `bench/${file}`], { stdio: 'inherit' });
  if (run.status !== 0) failures++;
}
process.exit(failures ? 1 : 0);
