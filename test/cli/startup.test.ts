import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
/** Packages only the commands that compute load: --help and argument errors must not pay for them. */
const HEAVY = ['onnxruntime-node', '@tensorflow/', 'parquet-wasm', 'apache-arrow', '@huggingface/tokenizers', 'parquetjs-lite', 'tokenizers'];

/** Runs the CLI with a module resolve hook that logs every URL it loads, and returns those URLs. */
function loadedModules(args: string[]): { status: number | null; stdout: string; urls: string[] } {
  const dir = tempDir();
  const log = path.join(dir, 'resolved.txt');
  writeFileSync(log, '');
  writeFileSync(path.join(dir, 'hooks.mjs'), `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(${JSON.stringify(log)}, result.url + '\\n');
  return result;
}
`);
  writeFileSync(path.join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(path.join(dir, 'hooks.mjs')).href)});\n`);
  const run = spawnSync(process.execPath, ['--import', pathToFileURL(path.join(dir, 'register.mjs')).href, path.join(REPO, 'bin/fisher-merge.mjs'), ...args], { cwd: REPO, encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, urls: readFileSync(log, 'utf8').split('\n').filter(Boolean) };
}

const heavyIn = (urls: string[]) => urls.filter((url) => HEAVY.some((name) => url.includes(`/node_modules/${name}`)));

describe('CLI start-up', () => {
  it('runs the compiled JavaScript and loads no engine, Arrow, Parquet or tokenizer module for --help', () => {
    const help = loadedModules(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('tokenize');
    expect(help.urls.some((url) => url.endsWith('/dist/pipelines/cli/main.js'))).toBe(true);
    expect(help.urls.filter((url) => url.endsWith('.ts'))).toEqual([]);
    expect(heavyIn(help.urls)).toEqual([]);
    for (const command of ['tokenize', 'predict', 'fisher', 'merge', 'eval', 'run']) expect(heavyIn(loadedModules([command, '--help']).urls), command).toEqual([]);
  });

  it('a command that reads data loads the data libraries when it runs', () => {
    const run = loadedModules(['tokenize', '--model', path.join(REPO, 'data/models/sst2'), '--task', 'sst2', '--data', path.join(REPO, 'data/glue/sst2/validation-00000-of-00001.parquet'), '--limit', '2']);
    expect(run.status).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(2);
    expect(heavyIn(run.urls).length).toBeGreaterThan(0);
  });
});
