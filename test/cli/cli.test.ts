import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorLine, rng, tempDir } from '../support.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const cli = (args: string[], input?: Uint8Array) => spawnSync(process.execPath, [path.join(REPO, 'bin/fisher-merge.mjs'), ...args], { cwd: REPO, input, encoding: 'utf8' });
const tokenize = ['tokenize', '--model', path.join(REPO, 'data/models/sst2'), '--task', 'sst2'];

describe('fisher-merge', () => {
  it('--version prints the version of the package that installs the command', () => {
    const { version } = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    const run = cli(['--version']);
    expect(run.status).toBe(0);
    expect(run.stdout).toBe(`${version}\n`);
  });

  it('bytes that are not Arrow IPC, on stdin or in a .arrow file, are one line naming the input', () => {
    const random = rng(12);
    const noise = Uint8Array.from({ length: 4096 }, () => Math.floor(random() * 256));
    const text = new TextEncoder().encode('sentence,label\nhello,1\n');
    const file = path.join(tempDir(), 'noise.arrow');
    writeFileSync(file, noise);
    for (const [data, bytes, name] of [['-', noise, '<stdin>'], ['-', text, '<stdin>'], [file, undefined, file]] as const) {
      const run = cli([...tokenize, '--data', data], bytes);
      expect(run.status).toBe(1);
      expect(run.stdout).toBe('');
      expect(errorLine(run.stderr).startsWith(`${name}: not Arrow IPC data (it starts with bytes `), run.stderr).toBe(true);
    }
  });
});
