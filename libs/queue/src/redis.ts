import { Redis } from 'ioredis';
import { UserError } from '@fisher-merge/core';

/**
 * A connection to the Redis named by `url` (redis://HOST:PORT[/DB], rediss://…, or a unix socket
 * path). The first connection fails fast with one clear line; once connected, the client reconnects
 * for as long as it takes and re-sends unanswered commands, so a Redis restart only pauses the job.
 */
export async function openRedis(url: string, role: string): Promise<Redis> {
  let connected = false;
  const options = {
    lazyConnect: true,
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: (attempt: number) => (connected ? Math.min(50 * attempt, 1000) : null),
  };
  const redis = /^rediss?:\/\//.test(url) ? new Redis(url, options) : new Redis({ ...options, path: url });
  // Errors while reconnecting are expected; the commands wait for the connection.
  redis.on('error', () => undefined);
  try {
    await redis.connect();
  } catch (e) {
    redis.disconnect();
    throw new UserError(`${role}: cannot reach Redis at ${url} (queue.url): ${(e as Error).message}`);
  }
  connected = true;
  return redis;
}

/** The entries of a one-stream XREAD/XREADGROUP/XAUTOCLAIM reply, whichever reply shape the protocol gives. */
export type StreamEntry = { id: string; fields: Map<string, Buffer> };

export function entriesOf(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  // RESP2: [[key, entries]]; RESP3 maps arrive flattened as [key, entries].
  return rangeEntries(Buffer.isBuffer(reply[0]) || typeof reply[0] === 'string' ? reply[1] : (reply[0] as unknown[])[1]);
}

/** The entries of an XRANGE reply (and of the stream part of the replies above). */
export function rangeEntries(reply: unknown): StreamEntry[] {
  return (reply as [Buffer, Buffer[] | null][]).flatMap(([id, flat]) => {
    // XAUTOCLAIM lists entries deleted meanwhile with null fields.
    if (!flat) return [];
    const fields = new Map<string, Buffer>();
    for (let i = 0; i < flat.length; i += 2) fields.set(flat[i]!.toString(), flat[i + 1]!);
    return [{ id: id.toString(), fields }];
  });
}

export function field(entry: StreamEntry, name: string): Buffer {
  const value = entry.fields.get(name);
  if (value === undefined) throw new Error(`stream entry ${entry.id} has no field '${name}'`);
  return value;
}
