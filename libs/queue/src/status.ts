import type { Redis } from 'ioredis';
import { jobKeys, WORKERS } from './keys.ts';

export interface TaskQueueStatus {
  /** Entries in the task's stream: appended and not yet acknowledged. */
  backlog: number;
  /** Entries delivered to a worker and not yet acknowledged. */
  pending: number;
  consumers: { name: string; pending: number; idle_ms: number }[];
  /** Batches done per worker (all runs). */
  done: Record<string, number>;
  /** Entries dead-lettered (all runs; `<prefix>:{task}:dead` holds the entries, reasons and workers). */
  dead: number;
}

/** Per task: the queue's backlog, pending entries, consumers and batches per worker. */
export async function queueStatus(redis: Redis, prefix: string, tasks: readonly string[]): Promise<Record<string, TaskQueueStatus>> {
  const out: Record<string, TaskQueueStatus> = {};
  for (const task of tasks) {
    const k = jobKeys(prefix).task(task);
    const backlog = await redis.xlen(k.batches);
    const groups = (await redis.call('XINFO', 'GROUPS', k.batches).catch(() => [])) as unknown[][];
    const group = groups.map(pairs).find((g) => g.name === WORKERS);
    const consumers = group ? ((await redis.call('XINFO', 'CONSUMERS', k.batches, WORKERS)) as unknown[][]).map(pairs) : [];
    const done = await redis.hgetall(k.done);
    const dead = await redis.xlen(k.dead);
    out[task] = {
      backlog,
      pending: Number(group?.pending ?? 0),
      consumers: consumers.map((c) => ({ name: String(c.name), pending: Number(c.pending), idle_ms: Number(c.idle) })),
      done: Object.fromEntries(Object.entries(done).map(([w, n]) => [w, Number(n)])),
      dead,
    };
  }
  return out;
}

/** XINFO replies: a flat [key, value, …] list (RESP2) or an already-built map (RESP3). */
function pairs(reply: unknown): Record<string, unknown> {
  if (!Array.isArray(reply)) return reply as Record<string, unknown>;
  const o: Record<string, unknown> = {};
  for (let i = 0; i < reply.length; i += 2) o[String(reply[i])] = reply[i + 1];
  return o;
}
