import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { Redis } from 'ioredis';
import { mkdirSync } from 'node:fs';
import { expect } from 'vitest';
import type { MaskFisher } from '@fisher-merge/fisher';
import { eventually } from '../support.ts';
import { publishParquet, REPO, split, taskRows, tempDir } from '../stream-job/helpers.ts';

export { eventually };

export const CLI = path.join(REPO, 'bin/fisher-merge.mjs');

/**
 * A real redis-server of its own, on a unix socket in a temporary directory (no port, no
 * persistence unless `aof`). `restart()` stops it and starts it again on the same socket and data.
 */
export class RedisServer {
  readonly dir = tempDir('fisher-merge-redis-');
  readonly socket = path.join(this.dir, 'redis.sock');
  private child: ChildProcess | undefined;

  private constructor(private readonly aof: boolean) {}

  static async start(options: { aof?: boolean } = {}): Promise<RedisServer> {
    const server = new RedisServer(options.aof ?? false);
    await server.launch();
    return server;
  }

  private async launch(): Promise<void> {
    const args = ['--port', '0', '--unixsocket', this.socket, '--unixsocketperm', '700', '--dir', this.dir, '--save', '', '--appendonly', this.aof ? 'yes' : 'no', '--appendfsync', 'always'];
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    this.child = child;
    process.once('exit', () => child.kill('SIGKILL'));
    await eventually('redis-server accepting connections', async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
      const probe = new Redis({ path: this.socket, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        return (await probe.ping()) === 'PONG';
      } catch {
        return false;
      } finally {
        probe.disconnect();
      }
    });
  }

  /** A client of this server (the test's own view of its state). */
  client(): Redis {
    const redis = new Redis({ path: this.socket, maxRetriesPerRequest: null });
    redis.on('error', () => undefined);
    return redis;
  }

  /** SIGKILL (`hard`) or a clean SHUTDOWN-like SIGTERM, then the same server again. */
  async restart(hard = true): Promise<void> {
    await this.stop(hard ? 'SIGKILL' : 'SIGTERM');
    await this.launch();
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(signal);
    await exited;
  }
}

/** A `fisher-merge worker CONFIG` process; its stderr is kept for failure messages. */
export function startWorker(config: string, flags: readonly string[] = []): { child: ChildProcess; stderr: () => string } {
  const child = spawn(process.execPath, [CLI, 'worker', config, ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  process.once('exit', () => child.kill('SIGKILL'));
  return { child, stderr: () => err };
}

export async function stopWorker(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  return (await exited)[0] as number | null;
}

/** Each task's first rows as files of the given sizes in DIR/incoming/TASK, before any job starts; returns the directories. */
export async function incoming(dir: string, tasks: readonly string[], parts: readonly number[]): Promise<Record<string, string>> {
  const dirs: Record<string, string> = {};
  const rows = parts.reduce((a, b) => a + b, 0);
  for (const task of tasks) {
    const watch = path.join(dir, 'incoming', task);
    mkdirSync(watch, { recursive: true });
    split(await taskRows(task, rows), parts).forEach((part, i) => publishParquet(path.join(watch, `part-${String(i).padStart(3, '0')}.parquet`), part));
    dirs[task] = watch;
  }
  return dirs;
}

export function expectSameStats(got: MaskFisher, want: MaskFisher): void {
  expect(got.examples).toBe(want.examples);
  expect(got.batches).toBe(want.batches);
  expect(got.dataFingerprint).toBe(want.dataFingerprint);
  expect(Array.from(got.head)).toEqual(Array.from(want.head));
  expect(Array.from(got.neuron)).toEqual(Array.from(want.neuron));
}
