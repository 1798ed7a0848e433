#!/usr/bin/env node
// Runs the whole test suite with vitest and ends with the one line CI reads: `N passed, N failed`.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = mkdtempSync(path.join(tmpdir(), 'fisher-merge-test-'));
// The run's JSON report stays (vitest names it at the end), replaced by the next run.
const report = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test-results', 'report.json');
rmSync(report, { force: true }); // a run that writes none must not be counted from the last one's
// Every temporary file of the run, the spawned commands' and servers' included, goes under `dir`,
// which goes at the end, however the run ended.
const scratch = path.join(dir, 'tmp');
mkdirSync(scratch);
const args = ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)];
const run = spawnSync('npx', args, { stdio: 'inherit', env: { ...process.env, TMPDIR: scratch } });

let passed = 0;
let failed = 0;
try {
  const result = JSON.parse(readFileSync(report, 'utf8'));
  passed = result.numPassedTests ?? 0;
  failed = result.numFailedTests ?? 0;
  // A file that fails outside any test (an import error, a failing hook) counts as one failure.
  failed += (result.testResults ?? []).filter((s) => s.status === 'failed' && !s.assertionResults.some((a) => a.status === 'failed')).length;
} catch {
  failed = Math.max(1, failed);
}
rmSync(dir, { recursive: true, force: true });
if (run.status !== 0 && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
