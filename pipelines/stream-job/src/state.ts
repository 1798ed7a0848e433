import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '@fisher-merge/core';
import type { MaskFisher } from '@fisher-merge/fisher';

/** Files and folders of a stream job's output directory. */
export function outLayout(out: string) {
  return {
    out,
    checkpoint: path.join(out, 'state', 'checkpoint.json'),
    /** Held by the one job writing this output (libs/core acquireLock). */
    lock: path.join(out, 'state', 'lock'),
    status: path.join(out, 'status.json'),
    versions: path.join(out, 'versions'),
    latest: path.join(out, 'latest'),
    quarantine: path.join(out, 'quarantine'),
    stopFile: path.join(out, 'control', 'stop'),
    publishFile: path.join(out, 'control', 'publish'),
  };
}

/**
 * How far a task's source has been consumed: whole files (base names, in the order they were
 * finished) and the file being read, whose rows before `row` are in the statistics. For an Arrow
 * IPC stream `current.row` is the number of rows consumed from the stream's start.
 */
export interface SourceCursor {
  consumed: Set<string>;
  current?: { file: string; row: number };
}

export interface TaskState {
  stats: MaskFisher;
  cursor: SourceCursor;
  quarantined: number;
}

/** Per task, the statistics the last published version was merged from (the publish policies' baseline). */
export interface PublishedMark {
  version: number;
  tasks: Record<string, { examples: number; head: Float64Array; neuron: Float64Array }>;
}

export interface StreamState {
  tasks: Record<string, TaskState>;
  published?: PublishedMark;
}

const STATE_FORMAT = 'fisher-merge-stream-state/1';

// Float64 sums go through base64 of their bytes: exact, and a third the size of decimal text.
const encodeF64 = (a: Float64Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
function decodeF64(text: unknown, where: string): Float64Array {
  if (typeof text !== 'string') throw new UserError(`${where}: expected base64 float64 data`);
  const bytes = Buffer.from(text, 'base64');
  if (bytes.byteLength % 8 !== 0) throw new UserError(`${where}: float64 data has ${bytes.byteLength} bytes, not a multiple of 8`);
  return new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

export function serializeState(state: StreamState): string {
  const tasks = Object.fromEntries(Object.entries(state.tasks).map(([name, t]) => [name, {
    stats: { ...t.stats, head: encodeF64(t.stats.head), neuron: encodeF64(t.stats.neuron) },
    cursor: { consumed: [...t.cursor.consumed], current: t.cursor.current ?? null },
    quarantined: t.quarantined,
  }]));
  const published = state.published && {
    version: state.published.version,
    tasks: Object.fromEntries(Object.entries(state.published.tasks).map(([name, p]) => [name, { examples: p.examples, head: encodeF64(p.head), neuron: encodeF64(p.neuron) }])),
  };
  return `${JSON.stringify({ format: STATE_FORMAT, time: new Date().toISOString(), tasks, published: published ?? null })}\n`;
}

/** The last checkpoint of `out`, or undefined when the job never checkpointed there. */
export async function readStreamState(file: string): Promise<StreamState | undefined> {
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (text === undefined) return undefined;
  let raw: { format?: unknown; tasks?: Record<string, { stats: MaskFisher & { head: string; neuron: string }; cursor: { consumed: string[]; current: SourceCursor['current'] | null }; quarantined: number }>; published?: { version: number; tasks: Record<string, { examples: number; head: string; neuron: string }> } | null };
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: checkpoint is not valid JSON: ${(e as Error).message}`);
  }
  if (raw.format !== STATE_FORMAT || typeof raw.tasks !== 'object') throw new UserError(`${file}: not a stream job checkpoint (format ${JSON.stringify(raw.format)}, expected "${STATE_FORMAT}")`);
  const tasks = Object.fromEntries(Object.entries(raw.tasks).map(([name, t]): [string, TaskState] => [name, {
    stats: { ...t.stats, head: decodeF64(t.stats.head, `${file}: tasks.${name}.stats.head`), neuron: decodeF64(t.stats.neuron, `${file}: tasks.${name}.stats.neuron`) },
    cursor: { consumed: new Set(t.cursor.consumed), ...(t.cursor.current ? { current: t.cursor.current } : {}) },
    quarantined: t.quarantined,
  }]));
  const published = raw.published
    ? {
        version: raw.published.version,
        tasks: Object.fromEntries(Object.entries(raw.published.tasks).map(([name, p]) => [name, { examples: p.examples, head: decodeF64(p.head, `${file}: published.${name}.head`), neuron: decodeF64(p.neuron, `${file}: published.${name}.neuron`) }])),
      }
    : undefined;
  return { tasks, ...(published ? { published } : {}) };
}
