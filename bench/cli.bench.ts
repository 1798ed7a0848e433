// CLI start-up: wall time of `fisher-merge --help` (the compiled JavaScript under dist/) against an
// empty Node process and against the same sources run through tsx, interleaved, RUNS each (default 10).
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const REPO = path.resolve(import.meta.dirname, '..');
const RUNS = Number(process.env.BENCH_CLI_RUNS ?? 10);
const peers: Record<string, string[]> = {
  'node -e ""': ['-e', ''],
  'fisher-merge --help (dist/)': [path.join(REPO, 'bin/fisher-merge.mjs'), '--help'],
  'fisher-merge --help via tsx (sources)': ['--import', 'tsx', path.join(REPO, 'pipelines/cli/src/main.ts'), '--help'],
};

const seconds: Record<string, number[]> = Object.fromEntries(Object.keys(peers).map((k) => [k, []]));
for (let r = 0; r < RUNS; r++) {
  for (const [name, args] of Object.entries(peers)) {
    const start = performance.now();
    const run = spawnSync(process.execPath, args, { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
    if (run.status !== 0) throw new Error(`${name} failed: ${run.stderr.toString().trim()}`);
    seconds[name]!.push((performance.now() - start) / 1000);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`${RUNS} runs each, interleaved\n`);
console.log('| command | best s | median s |');
console.log('|---|---|---|');
for (const [name, xs] of Object.entries(seconds)) console.log(`| ${name} | ${Math.min(...xs).toFixed(3)} | ${median(xs).toFixed(3)} |`);
