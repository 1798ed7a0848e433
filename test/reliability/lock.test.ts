// One stream job per output: a lock held for the job's life; a dead holder's lock never blocks a restart.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireLock } from '@fisher-merge/core';
import { outLayout } from '@fisher-merge/stream-job';
import { writeStreamConfig } from '../stream-job/helpers.ts';
import { tempDir } from '../support.ts';
import { cli, expectRefused, REPO } from './support.ts';

/** Resolves when the child printed `text` on the given stream. */
function printed(child: ChildProcess, stream: 'stdout' | 'stderr', text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    child[stream]!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(text)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before printing ${text}: ${seen}`)));
  });
}

describe('acquireLock', () => {
  it('refuses a second holder naming the live holder, and is free again once released', async () => {
    const file = path.join(tempDir(), 'state', 'lock');
    const lock = await acquireLock(file, 'output X');
    await expect(acquireLock(file, 'output X')).rejects.toThrow(new RegExp(`^output X is in use by another job \\(pid ${process.pid}, since .*; lock ${file}\\)`));
    await lock.release();
    expect(existsSync(file)).toBe(false);
    await (await acquireLock(file, 'output X')).release();
  });

  it('takes over the lock of a holder killed with SIGKILL', async () => {
    const file = path.join(tempDir(), 'lock');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'test/reliability/hold-lock.ts'), file], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    await printed(child, 'stdout', 'held');
    await expect(acquireLock(file, 'the output')).rejects.toThrow(`pid ${child.pid}`);
    child.kill('SIGKILL');
    await once(child, 'exit');
    const lock = await acquireLock(file, 'the output');
    expect(JSON.parse(readFileSync(file, 'utf8')).pid).toBe(process.pid);
    await lock.release();
  });

  it('a lock naming an exited process, or a reused pid of another process, is stale', async () => {
    const file = path.join(tempDir(), 'lock');
    const exited = spawnSync(process.execPath, ['-e', '']);
    writeFileSync(file, JSON.stringify({ pid: exited.pid, start: null, since: 'then' }));
    await (await acquireLock(file, 'the output')).release();
    // pid 1 is alive, but it is not the process that took the lock (its start time differs).
    writeFileSync(file, JSON.stringify({ pid: 1, start: 'not-the-start-of-pid-1', since: 'then' }));
    await (await acquireLock(file, 'the output')).release();
  });
});

/** Starts `n` contenders for the lock, lets them go at once, and returns each one's first answer after "ready". */
async function contend(file: string, n: number): Promise<{ child: ChildProcess; answer: string }[]> {
  const children = Array.from({ length: n }, () => spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'test/reliability/contend-lock.ts'), file], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] }));
  await Promise.all(children.map((c) => printed(c, 'stdout', 'ready')));
  const answers = children.map((c) => new Promise<string>((resolve) => {
    let seen = '';
    c.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      const line = seen.split('\n').find((l) => l === 'held' || l.startsWith('refused: '));
      if (line) resolve(line);
    });
  }));
  for (const c of children) c.stdin!.write('go\n');
  return Promise.all(children.map(async (child, i) => ({ child, answer: await answers[i]! })));
}

describe('many jobs taking over one stale lock at once', () => {
  it('exactly one holds it, every other is refused naming that one, round after round', async () => {
    const file = path.join(tempDir(), 'lock');
    for (let round = 0; round < 4; round++) {
      const dead = spawnSync(process.execPath, ['-e', '']);
      writeFileSync(file, JSON.stringify({ pid: dead.pid, start: null, since: `round ${round}` }));
      const results = await contend(file, 6);
      try {
        const holders = results.filter((r) => r.answer === 'held');
        expect(holders.length, results.map((r) => r.answer).join('\n')).toBe(1);
        const winner = holders[0]!.child.pid;
        expect(JSON.parse(readFileSync(file, 'utf8')).pid).toBe(winner);
        for (const r of results.filter((x) => x.answer !== 'held')) expect(r.answer).toContain(`is in use by another job (pid ${winner},`);
      } finally {
        for (const r of results) r.child.kill('SIGKILL');
        await Promise.all(results.map((r) => (r.child.exitCode === null ? once(r.child, 'exit') : undefined)));
      }
    }
  }, 120_000);

  it('a takeover marker left by a job that died mid-takeover does not block the lock', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'lock');
    const dead = spawnSync(process.execPath, ['-e', '']);
    const stale = JSON.stringify({ pid: dead.pid, start: null, since: 'then' });
    writeFileSync(file, stale);
    const marker = `${file}.takeover-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`;
    writeFileSync(marker, JSON.stringify({ pid: dead.pid, start: null, since: 'mid-takeover' }));
    const lock = await acquireLock(file, 'the output');
    expect(JSON.parse(readFileSync(file, 'utf8')).pid).toBe(process.pid);
    expect(readdirSync(dir)).toEqual(['lock']);
    await lock.release();
  });
});

describe('two stream jobs on one output', () => {
  it('the second is refused in one line naming the first one\'s pid; the output is left to the first', async () => {
    const root = tempDir();
    const watch = path.join(root, 'in');
    mkdirSync(watch);
    const out = path.join(root, 'out');
    const config = writeStreamConfig(path.join(root, 'stream.yaml'), out, [{ task: 'sst2', watch }]);
    const first = spawn(process.execPath, [path.join(REPO, 'bin/fisher-merge.mjs'), 'stream', config], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      await printed(first, 'stderr', '"stream.started"');
      expectRefused(cli(['stream', config, '--exit-when-idle', '100']), new RegExp(`stream output ${out} is in use by another job \\(pid ${first.pid},`));
      expect(JSON.parse(readFileSync(outLayout(out).lock, 'utf8')).pid).toBe(first.pid);
    } finally {
      first.kill('SIGKILL');
      await once(first, 'exit');
    }
    // The killed job's lock does not block a restart.
    const restart = cli(['stream', config, '--exit-when-idle', '100']);
    expect(restart.status, restart.stderr).toBe(0);
    expect(existsSync(outLayout(out).lock)).toBe(false);
  });
});
