import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorLine, logLines } from '../support.ts';
import { tempDir, writeStreamConfig } from '../stream-job/helpers.ts';
import { CLI, RedisServer, startWorker, stopWorker } from './helpers.ts';

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
  it('a worker or coordinator that cannot reach Redis retries, then gives up after queue.connect_timeout_s with one line', () => {
    const missing = path.join(tempDir(), 'no-redis.sock');
    for (const command of ['worker', 'stream']) {
      const { code, stderr } = run([command, config({ url: missing, prefix: 'p', connect_timeout_s: 0.5 })]);
      expect(code).toBe(1);
      expect(errorLine(stderr)).toContain(`cannot reach Redis at ${missing} (queue.url) for 0.5 s (queue.connect_timeout_s)`);
      // It retried (with backoff) before giving up, and said so.
      expect(logLines(stderr).filter((l) => l.event === 'queue.redis_unreachable').length).toBeGreaterThan(0);
    }
  });

  it('a worker started before any coordinator waits for a job, saying so once, and stops on SIGTERM with exit 0', async () => {
    const worker = startWorker(config({ url: redis.socket, prefix: 'nobody-here' }));
    const waiting = await worker.line('worker.waiting');
    expect(waiting.prefix).toBe('nobody-here');
    expect(await stopWorker(worker.child)).toBe(0);
    expect(logLines(worker.stderr()).filter((l) => l.event === 'worker.waiting')).toHaveLength(1);
  });

  it('a worker given a config without queue', () => {
    const none = run(['worker', config(undefined)]);
    expect(none.code).toBe(1);
    expect(errorLine(none.stderr)).toMatch(/'queue' is not set; a worker needs queue.url and queue.prefix$/);
  });

  it('bad --stop-timeout-s and --metrics-port name the flag', () => {
    for (const [flag, value] of [['--stop-timeout-s', '0'], ['--metrics-port', '70000']]) {
      const bad = run(['worker', config({ url: redis.socket, prefix: 'p' }), flag!, value!]);
      expect(bad.code).toBe(1);
      expect(errorLine(bad.stderr)).toContain(flag!);
    }
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
