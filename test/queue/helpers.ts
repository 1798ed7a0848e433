import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { Redis } from 'ioredis';
import { mkdirSync } from 'node:fs';
import { filter, lastValueFrom } from 'rxjs';
import { FlowControl, glueTask, releaseCredits, taskBatches } from '@fisher-merge/data';
import { openEngine } from '@fisher-merge/engines';
import { emptyMaskFisher, foldFisher, maskFisherContributions, type MaskFisher } from '@fisher-merge/fisher';
import { loadTaskModel } from '@fisher-merge/task-model';
import { eventually, type LogLine } from '../support.ts';
import { modelDir, publishParquet, REPO, split, taskRows, tempDir } from '../stream-job/helpers.ts';

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

  /** The server again after `stop` (same socket; without persistence, empty). */
  async start(): Promise<void> {
    await this.launch();
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

/** A CLI process whose stderr (JSON lines) is kept, with a wait for a given log line. */
export interface LoggingProcess {
  child: ChildProcess;
  stderr: () => string;
  /** Resolves with the first line (from the start) whose event is `event` and that `match` accepts; rejects if the process exits first. */
  line: (event: string, match?: (line: LogLine) => boolean) => Promise<LogLine>;
}

/** `fisher-merge ARGS` as a child process; killed at exit whatever happens. */
export function startCli(args: readonly string[]): LoggingProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const waiters = new Set<() => void>();
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of waiters) w();
  });
  child.on('exit', () => {
    for (const w of waiters) w();
  });
  process.once('exit', () => child.kill('SIGKILL'));
  const find = (event: string, match: (line: LogLine) => boolean): LogLine | undefined =>
    err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine).find((l) => l.event === event && match(l));
  const line = (event: string, match: (line: LogLine) => boolean = () => true): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = find(event, match);
        if (found) {
          waiters.delete(check);
          resolve(found);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          waiters.delete(check);
          reject(new Error(`exited (${child.exitCode ?? child.signalCode}) before a '${event}' line:\n${err}`));
        }
      };
      waiters.add(check);
      check();
    });
  return { child, stderr: () => err, line };
}

/** Runs `body` with a fresh redis-server, stopped afterwards whatever happens. */
export async function withRedis(body: (redis: RedisServer) => Promise<void>, options: { aof?: boolean } = {}): Promise<void> {
  const redis = await RedisServer.start(options);
  try {
    await body(redis);
  } finally {
    await redis.stop();
  }
}

/** A `fisher-merge worker CONFIG` process; its stderr is kept for failure messages and awaited lines. */
export function startWorker(config: string, flags: readonly string[] = []): LoggingProcess {
  return startCli(['worker', config, ...flags]);
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

/**
 * A task's mask Fisher as the one-shot path computes it (the stream's batches, in order) with the
 * batches numbered in `dead` left out: what a job that dead-lettered them must hold.
 */
export async function statsWithout(task: string, file: string, batchSize: number, dead: ReadonlySet<number>): Promise<MaskFisher> {
  const { model, tokenizer, task: spec } = await loadTaskModel(modelDir(task), glueTask(task), {});
  const engine = await openEngine('onnx', model.weights, {});
  try {
    const { numLayers, numHeads, intermediateSize } = model.config;
    const flow = new FlowControl(4, { grow: true });
    const updates = taskBatches(file, { task: spec, tokenizer, batchSize, padTokenId: model.config.padTokenId, flow }).pipe(
      maskFisherContributions(engine, 'batch'),
      releaseCredits(flow),
      filter((_, seq) => !dead.has(seq)),
      foldFisher(() => emptyMaskFisher({ numLayers, numHeads, intermediateSize }, { mode: 'batch', batchSize, task, modelFingerprint: '' })),
    );
    return (await lastValueFrom(updates)).stats;
  } finally {
    await engine.dispose();
  }
}
