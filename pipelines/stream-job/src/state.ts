import { promises as fs } from 'node:fs';
import path from 'node:path';
import { clipped, shown, UserError } from '@fisher-merge/core';
import { checkStatisticShape, checkStatisticValues, type MaskFisher } from '@fisher-merge/fisher';

/** Files and folders of a stream job's output directory. */
export function outLayout(out: string) {
  return {
    out,
    checkpoint: path.join(out, 'state', 'checkpoint.json'),
    /** Held by the one job writing this output (libs/core acquireLock). */
    lock: path.join(out, 'state', 'lock'),
    status: path.join(out, 'status.json'),
    versions: path.join(out, 'versions'),
    /** Candidates a gate refused, numbered in the one sequence with versions/. */
    rejected: path.join(out, 'rejected'),
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
  /** Rows of batches a queue dead-lettered: passed by the cursor, never folded. */
  skippedRows: number;
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

export function serializeState(state: StreamState): string {
  const tasks = Object.fromEntries(Object.entries(state.tasks).map(([name, t]) => [name, {
    stats: { ...t.stats, head: encodeF64(t.stats.head), neuron: encodeF64(t.stats.neuron) },
    cursor: { consumed: [...t.cursor.consumed], current: t.cursor.current ?? null },
    quarantined: t.quarantined,
    skipped_rows: t.skippedRows,
  }]));
  const published = state.published && {
    version: state.published.version,
    tasks: Object.fromEntries(Object.entries(state.published.tasks).map(([name, p]) => [name, { examples: p.examples, head: encodeF64(p.head), neuron: encodeF64(p.neuron) }])),
  };
  return `${JSON.stringify({ format: STATE_FORMAT, time: new Date().toISOString(), tasks, published: published ?? null })}\n`;
}

/** The last checkpoint of `out`, or undefined when the job never checkpointed there; a corrupt one is one UserError naming the file, never used. */
export async function readStreamState(file: string): Promise<StreamState | undefined> {
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (text === undefined) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: checkpoint is not valid JSON: ${clipped((e as Error).message)}; it is not used (move it away to start over)`);
  }
  return new CheckpointReader(file).state(raw);
}

type Json = Record<string, unknown>;

/**
 * Validates a parsed checkpoint before anything of it is used: known keys only, sums of the lengths
 * their shape says (L x H, L x I) holding finite values >= 0 (they are sums of squares), counts and
 * cursors that a job could have written. Every failure names the file and the key.
 */
class CheckpointReader {
  constructor(private readonly file: string) {}

  private fail(key: string, what: string, value: unknown): never {
    throw new UserError(`${this.file}: checkpoint ${key}: expected ${what}, got ${shown(value)}; it is not used (move it away to start over)`);
  }

  private object(value: unknown, key: string, keys: readonly string[]): Json {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) this.fail(key, 'a mapping', value);
    const unknown = Object.keys(value).find((k) => !keys.includes(k));
    if (unknown !== undefined) this.fail(`${key}.${clipped(unknown)}`, `no such key (known: ${keys.join(', ')})`, (value as Json)[unknown]);
    return value as Json;
  }

  private count(value: unknown, key: string, { whole, min }: { whole: boolean; min: number }): number {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min || (whole && !Number.isSafeInteger(value))) {
      this.fail(key, `${whole ? 'a whole number' : 'a finite number'} >= ${min}`, value);
    }
    return value;
  }

  private text(value: unknown, key: string, pattern?: RegExp): string {
    if (typeof value !== 'string' || (pattern && !pattern.test(value))) this.fail(key, pattern ? `a string matching ${pattern}` : 'a string', value);
    return value;
  }

  /** A file's base name as the job records it: no folder part, so a cursor cannot name a file outside the watched folder. */
  private baseName(value: unknown, key: string): string {
    const name = this.text(value, key);
    if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\\')) this.fail(key, 'a file name without a folder', value);
    return name;
  }

  /** Sums of squares: base64 float64 of exactly `length` values, each finite and >= 0. */
  private sums(value: unknown, key: string, shape: readonly [number, number]): Float64Array {
    const text = this.text(value, key, /^[A-Za-z0-9+/]*={0,2}$/);
    const bytes = Buffer.from(text, 'base64');
    const length = shape[0] * shape[1];
    if (bytes.byteLength !== length * 8) this.fail(key, `${length} float64 values (${shape[0]} x ${shape[1]})`, `${bytes.byteLength} bytes`);
    const values = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    checkStatisticValues({ file: `${this.file}: checkpoint`, tensor: key, shape }, values, { sumOfSquares: true });
    return values;
  }

  state(raw: unknown): StreamState {
    const top = this.object(raw, '(top level)', ['format', 'time', 'tasks', 'published']);
    if (top.format !== STATE_FORMAT) this.fail('format', `"${STATE_FORMAT}" (a stream job checkpoint)`, top.format);
    const tasks: Record<string, TaskState> = {};
    for (const [name, t] of Object.entries(this.object(top.tasks, 'tasks', Object.keys(top.tasks ?? {})))) tasks[name] = this.task(`tasks.${clipped(name)}`, t);
    if (top.published === null || top.published === undefined) return { tasks };
    return { tasks, published: this.published(top.published, tasks) };
  }

  private task(key: string, raw: unknown): TaskState {
    const t = this.object(raw, key, ['stats', 'cursor', 'quarantined', 'skipped_rows']);
    const s = this.object(t.stats, `${key}.stats`, ['mode', 'batchSize', 'numLayers', 'numHeads', 'intermediateSize', 'head', 'neuron', 'examples', 'batches', 'task', 'modelFingerprint', 'dataFingerprint']);
    if (s.mode !== 'batch' && s.mode !== 'example') this.fail(`${key}.stats.mode`, '"batch" or "example"', s.mode);
    const shape = {
      numLayers: this.count(s.numLayers, `${key}.stats.numLayers`, { whole: true, min: 1 }),
      numHeads: this.count(s.numHeads, `${key}.stats.numHeads`, { whole: true, min: 1 }),
      intermediateSize: this.count(s.intermediateSize, `${key}.stats.intermediateSize`, { whole: true, min: 1 }),
    };
    checkStatisticShape(`${this.file}: checkpoint ${key}.stats`, shape);
    const c = this.object(t.cursor, `${key}.cursor`, ['consumed', 'current']);
    if (!Array.isArray(c.consumed)) this.fail(`${key}.cursor.consumed`, 'a list of file names', c.consumed);
    const consumed = new Set(c.consumed.map((f, i) => this.baseName(f, `${key}.cursor.consumed[${i}]`)));
    let current: SourceCursor['current'];
    if (c.current !== null && c.current !== undefined) {
      const at = this.object(c.current, `${key}.cursor.current`, ['file', 'row']);
      current = { file: this.baseName(at.file, `${key}.cursor.current.file`), row: this.count(at.row, `${key}.cursor.current.row`, { whole: true, min: 0 }) };
    }
    return {
      stats: {
        mode: s.mode,
        batchSize: this.count(s.batchSize, `${key}.stats.batchSize`, { whole: true, min: 1 }),
        ...shape,
        head: this.sums(s.head, `${key}.stats.head`, [shape.numLayers, shape.numHeads]),
        neuron: this.sums(s.neuron, `${key}.stats.neuron`, [shape.numLayers, shape.intermediateSize]),
        // Decay scales the counts, so they need not be whole.
        examples: this.count(s.examples, `${key}.stats.examples`, { whole: false, min: 0 }),
        batches: this.count(s.batches, `${key}.stats.batches`, { whole: false, min: 0 }),
        task: this.text(s.task, `${key}.stats.task`),
        modelFingerprint: this.text(s.modelFingerprint, `${key}.stats.modelFingerprint`),
        dataFingerprint: this.text(s.dataFingerprint, `${key}.stats.dataFingerprint`, /^[0-9a-f]{64}$/),
      },
      cursor: { consumed, ...(current ? { current } : {}) },
      quarantined: this.count(t.quarantined, `${key}.quarantined`, { whole: true, min: 0 }),
      // Checkpoints written before dead-lettering existed have no skipped rows.
      skippedRows: t.skipped_rows === undefined ? 0 : this.count(t.skipped_rows, `${key}.skipped_rows`, { whole: true, min: 0 }),
    };
  }

  private published(raw: unknown, tasks: Record<string, TaskState>): PublishedMark {
    const p = this.object(raw, 'published', ['version', 'tasks']);
    const marks: PublishedMark['tasks'] = {};
    for (const [name, m] of Object.entries(this.object(p.tasks, 'published.tasks', Object.keys(tasks)))) {
      const key = `published.tasks.${name}`;
      const mark = this.object(m, key, ['examples', 'head', 'neuron']);
      const { numLayers: L, numHeads: H, intermediateSize: I } = tasks[name]!.stats;
      marks[name] = {
        examples: this.count(mark.examples, `${key}.examples`, { whole: false, min: 0 }),
        head: this.sums(mark.head, `${key}.head`, [L, H]),
        neuron: this.sums(mark.neuron, `${key}.neuron`, [L, I]),
      };
    }
    return { version: this.count(p.version, 'published.version', { whole: true, min: 1 }), tasks: marks };
  }
}
