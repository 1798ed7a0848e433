import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorLine } from '../support.ts';
import { tempDir, writeStreamConfig } from '../stream-job/helpers.ts';
import { CLI, RedisServer } from './helpers.ts';

let redis: RedisServer;
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(() => redis?.stop());

function run(args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stderr: r.stderr };
}

function config(queue: Record<string, unknown> | undefined): string {
  const dir = tempDir();
  return writeStreamConfig(path.join(dir, 'config.yaml'), path.join(dir, 'out'), [{ task: 'sst2', watch: path.join(dir, 'in') }], queue ? { queue } : {});
}

describe('queue errors are one clear line', () => {
  it('a worker or coordinator that cannot reach Redis', () => {
    const missing = path.join(tempDir(), 'no-redis.sock');
    for (const command of ['worker', 'stream']) {
      const { code, stderr } = run([command, config({ url: missing, prefix: 'p' })]);
      expect(code).toBe(1);
      expect(errorLine(stderr)).toContain(`cannot reach Redis at ${missing} (queue.url)`);
    }
  });

  it('a worker given a prefix no coordinator announced, or a config without queue', () => {
    const wrong = run(['worker', config({ url: redis.socket, prefix: 'nobody-here' })]);
    expect(wrong.code).toBe(1);
    expect(errorLine(wrong.stderr)).toBe(`no stream coordinator has announced a job with prefix 'nobody-here' on ${redis.socket} (queue.prefix); start 'fisher-merge stream CONFIG' first`);
    const none = run(['worker', config(undefined)]);
    expect(none.code).toBe(1);
    expect(errorLine(none.stderr)).toMatch(/'queue' is not set; a worker needs queue.url and queue.prefix$/);
  });

  it('a worker given --threads 0 names the flag', () => {
    const bad = run(['worker', config({ url: redis.socket, prefix: 'p' }), '--threads', '0']);
    expect(bad.code).toBe(1);
    expect(errorLine(bad.stderr)).toContain('--threads');
  });

  it('a coordinator given --threads says that workers take it (it runs no engine)', () => {
    const file = config({ url: redis.socket, prefix: 'p' });
    const bad = run(['stream', file, '--threads', '1']);
    expect(bad.code).toBe(1);
    expect(errorLine(bad.stderr)).toBe(`--threads: ${file} sets 'queue', so this process coordinates and runs no engine; give --threads to each worker`);
  });

  it('a bad queue key names it', () => {
    const bad = run(['worker', config({ url: redis.socket, max_pending: 0 })]);
    expect(bad.code).toBe(1);
    expect(errorLine(bad.stderr)).toContain('queue.max_pending');
  });
});
