import { promises as fs } from 'node:fs';
import path from 'node:path';
import { clipped, sha256Files, shown, UserError, writeFileAtomic } from '@fisher-merge/core';
import { checkStatisticShape, checkStatisticValues, openGramFile, writeGramStatsNow, type GramInput, type GramStats, type MaskFisher } from '@fisher-merge/fisher';

/** Files and folders of a stream job's output directory. */
export function outLayout(out: string) {
  return {
    out,
    checkpoint: path.join(out, 'state', 'checkpoint.json'),
    /** Gram sums of the tasks accumulating them (regmean), one file per task, named in checkpoint.json. */
    grams: path.join(out, 'state', 'grams'),
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

/** Running Gram sums (regmean) and the batches folded into them. */
export type StreamGrams = GramStats & { batches: number };

/** What a task accumulates: mask Fisher, or Gram sums when the merge rule is regmean. */
export type TaskStatistics = MaskFisher | StreamGrams;

export const isGramStats = (stats: TaskStatistics): stats is StreamGrams => 'grams' in stats;

/** The statistic's name in status.json, `status` and the manifests. */
export const statisticName = (stats: TaskStatistics): 'mask Fisher' | 'gram' => (isGramStats(stats) ? 'gram' : 'mask Fisher');

export interface TaskState {
  /** Mask Fisher sums are never changed once made; Gram sums are added to in place (see addGramContribution). */
  stats: TaskStatistics;
  cursor: SourceCursor;
  quarantined: number;
  /** Rows of batches a queue dead-lettered: passed by the cursor, never folded. */
  skippedRows: number;
}

/**
 * Per task, the statistics the last published version was merged from (the publish policies'
 * baseline): its examples, and for mask Fisher its sums (Gram sums are not kept twice; the config
 * refuses relative_change with them).
 */
export interface PublishedMark {
  version: number;
  tasks: Record<string, { examples: number; head?: Float64Array; neuron?: Float64Array }>;
}

/** A task's entry of a published mark, from the statistics a version was merged from. */
export const publishedMark = (stats: TaskStatistics): PublishedMark['tasks'][string] =>
  (isGramStats(stats) ? { examples: stats.examples } : { examples: stats.examples, head: stats.head, neuron: stats.neuron });

/** A Gram file beside checkpoint.json: its name in `state/grams/`, size and sha256, so that a torn pair is detected. */
export interface GramFileRef {
  name: string;
  bytes: number;
  sha256: string;
}

export interface StreamState {
  tasks: Record<string, TaskState>;
  published?: PublishedMark;
  /** Per Gram task with examples, the file holding its sums (what a checkpoint read found; a writer makes its own). */
  gramFiles?: Record<string, GramFileRef>;
}

const STATE_FORMAT = 'fisher-merge-stream-state/1';

// Float64 sums go through base64 of their bytes: exact, and a third the size of decimal text.
const encodeF64 = (a: Float64Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

/** checkpoint.json's text; a Gram task's sums are in the file `gramFiles` names for it. */
export function serializeState(state: StreamState, gramFiles: Readonly<Record<string, GramFileRef>> = {}): string {
  const tasks = Object.fromEntries(Object.entries(state.tasks).map(([name, t]) => [name, {
    stats: isGramStats(t.stats) ? serializeGrams(t.stats, gramFiles[name]) : { ...t.stats, head: encodeF64(t.stats.head), neuron: encodeF64(t.stats.neuron) },
    cursor: { consumed: [...t.cursor.consumed], current: t.cursor.current ?? null },
    quarantined: t.quarantined,
    skipped_rows: t.skippedRows,
  }]));
  const published = state.published && {
    version: state.published.version,
    tasks: Object.fromEntries(Object.entries(state.published.tasks).map(([name, p]) => [name, {
      examples: p.examples,
      ...(p.head && p.neuron ? { head: encodeF64(p.head), neuron: encodeF64(p.neuron) } : {}),
    }])),
  };
  return `${JSON.stringify({ format: STATE_FORMAT, time: new Date().toISOString(), tasks, published: published ?? null })}\n`;
}

function serializeGrams(stats: StreamGrams, file: GramFileRef | undefined) {
  if (stats.examples > 0 && !file) throw new Error(`Gram sums of task ${stats.task} have no file to go in`);
  const { grams: _sums, inputs, ...counts } = stats;
  return { kind: 'gram', inputs: inputs.map(({ name, dim }) => ({ name, dim })), ...counts, file: file ?? null };
}

/** checkpoint.json is read whole: larger than this it is refused before it is read (Gram sums live in their own files). */
export const MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024;

export interface ReadStateOptions {
  /** Read and check each Gram task's file (size, sha256, values); false: checkpoint.json only (`status`). Default true. */
  grams?: boolean;
}

/** The last checkpoint of `out`, or undefined when the job never checkpointed there; a corrupt one is one UserError naming the file, never used. */
export async function readStreamState(file: string, options: ReadStateOptions = {}): Promise<StreamState | undefined> {
  const handle = await fs.open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (handle === undefined) return undefined;
  let text: string;
  try {
    // One open file: a job replacing checkpoint.json meanwhile (rename) does not change what is sized and read.
    const { size } = await handle.stat();
    if (size > MAX_CHECKPOINT_BYTES) throw new UserError(`${file}: checkpoint is ${size} bytes, more than the ${MAX_CHECKPOINT_BYTES} (256 MiB) a checkpoint may have; it is not used (move it away to start over)`);
    text = await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: checkpoint is not valid JSON: ${clipped((e as Error).message)}; it is not used (move it away to start over)`);
  }
  const state = new CheckpointReader(file).state(raw);
  if (options.grams === false) return state;
  for (const [name, ref] of Object.entries(state.gramFiles ?? {})) {
    state.tasks[name]!.stats = await readGramFile(file, name, state.tasks[name]!.stats as StreamGrams, ref);
  }
  return state;
}

/**
 * A Gram task's sums from the file the checkpoint names, used only when its size and sha256 are the
 * checkpoint's (a pair torn by a copy or a disk fault is one line, never used) and its values pass
 * the checks of any Gram file.
 */
async function readGramFile(checkpoint: string, task: string, stats: StreamGrams, ref: GramFileRef): Promise<StreamGrams> {
  const file = path.join(path.dirname(checkpoint), 'grams', ref.name);
  const torn = (what: string): never => {
    throw new UserError(`${file}: ${what}, but ${checkpoint} names it for task '${task}' (${ref.bytes} bytes, sha256 ${ref.sha256.slice(0, 12)}…): the checkpoint and its Gram file do not belong together; neither is used (move ${path.dirname(checkpoint)} away to start over)`);
  };
  const size = await fs.stat(file).then((st) => st.size, () => torn('is missing'));
  if (size !== ref.bytes) torn(`holds ${size} bytes`);
  const digest = await sha256Files([file]);
  if (digest !== ref.sha256) torn(`has sha256 ${digest.slice(0, 12)}…`);
  const opened = openGramFile(file, stats.inputs);
  for (const key of ['examples', 'dataFingerprint', 'modelFingerprint', 'task'] as const) {
    if (opened.meta[key] !== stats[key]) torn(`says ${key} ${String(opened.meta[key])}, the checkpoint ${String(stats[key])}`);
  }
  return { ...stats, grams: new Map(stats.inputs.map((i) => [i.name, { sum: opened.sum(i.name), count: opened.counts.get(i.name)! }])) };
}

/**
 * Writes a job's checkpoints: checkpoint.json, replaced atomically, and for each Gram task whose sums
 * changed since the last checkpoint a new file under state/grams/ (written, fsynced and renamed before
 * checkpoint.json names it; the file it replaces is removed after). A kill at any moment leaves
 * checkpoint.json naming complete files; files no checkpoint names are removed when the next run opens.
 */
export class CheckpointWriter {
  /** Per Gram task, its file as the last checkpoint names it, and the fold of the sums in it. */
  private readonly written = new Map<string, GramFileRef & { fold: string }>();

  private constructor(private readonly layout: ReturnType<typeof outLayout>) {}

  /** A writer continuing from `saved` (the checkpoint read at start); removes Gram files it does not name. */
  static async open(out: string, saved: StreamState | undefined): Promise<CheckpointWriter> {
    const writer = new CheckpointWriter(outLayout(out));
    for (const [name, ref] of Object.entries(saved?.gramFiles ?? {})) writer.written.set(name, { ...ref, fold: foldOf(saved!.tasks[name]!.stats as StreamGrams) });
    const named = new Set([...writer.written.values()].map((r) => r.name));
    const present = await fs.readdir(writer.layout.grams).catch(() => [] as string[]);
    for (const f of present) if (!named.has(f)) await fs.rm(path.join(writer.layout.grams, f), { force: true });
    return writer;
  }

  async write(state: StreamState): Promise<void> {
    const changed = Object.entries(state.tasks).flatMap(([task, { stats }]) =>
      (isGramStats(stats) && stats.examples > 0 && this.written.get(task)?.fold !== foldOf(stats) ? [{ task, stats, name: `${encodeURIComponent(task)}-${stats.batches}-${stats.dataFingerprint.slice(0, 12)}.safetensors` }] : []));
    const files = changed.map(({ name }) => path.join(this.layout.grams, name));
    try {
      // Every byte synchronously, before the next fold adds to the sums in place; the flush to disk is awaited.
      await Promise.all(changed.map(({ stats }, i) => writeGramStatsNow(files[i]!, stats)));
      const refs = await Promise.all(files.map(async (file, i) => ({ name: changed[i]!.name, bytes: (await fs.stat(file)).size, sha256: await sha256Files([file]) })));
      const now = new Map(this.written);
      changed.forEach(({ task, stats }, i) => now.set(task, { ...refs[i]!, fold: foldOf(stats) }));
      await writeFileAtomic(this.layout.checkpoint, serializeState(state, Object.fromEntries([...now].map(([task, { fold: _, ...ref }]) => [task, ref]))));
      const replaced = changed.flatMap(({ task }) => this.written.get(task)?.name ?? []);
      for (const [task, ref] of now) this.written.set(task, ref);
      for (const name of replaced) await fs.rm(path.join(this.layout.grams, name), { force: true });
    } catch (e) {
      // checkpoint.json still names the files before these.
      for (const file of files) if (![...this.written.values()].some((r) => path.join(this.layout.grams, r.name) === file)) await fs.rm(file, { force: true });
      throw e;
    }
  }
}

/** What identifies the content of a task's running Gram sums: each fold adds a batch. */
const foldOf = (stats: StreamGrams): string => `${stats.batches}:${stats.dataFingerprint}`;

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
    const gramFiles: Record<string, GramFileRef> = {};
    for (const [name, t] of Object.entries(this.object(top.tasks, 'tasks', Object.keys(top.tasks ?? {})))) {
      const key = `tasks.${clipped(name)}`;
      const { state, file } = this.task(key, t);
      tasks[name] = state;
      if (file) gramFiles[name] = file;
    }
    const files = Object.keys(gramFiles).length > 0 ? { gramFiles } : {};
    if (top.published === null || top.published === undefined) return { tasks, ...files };
    return { tasks, published: this.published(top.published, tasks), ...files };
  }

  private task(key: string, raw: unknown): { state: TaskState; file?: GramFileRef } {
    const t = this.object(raw, key, ['stats', 'cursor', 'quarantined', 'skipped_rows']);
    const statsKind = (t.stats as Json | null)?.kind;
    const { stats, file } = statsKind === 'gram' ? this.grams(t.stats, `${key}.stats`) : { stats: this.maskFisher(t.stats, `${key}.stats`), file: undefined };
    const c = this.object(t.cursor, `${key}.cursor`, ['consumed', 'current']);
    if (!Array.isArray(c.consumed)) this.fail(`${key}.cursor.consumed`, 'a list of file names', c.consumed);
    const consumed = new Set(c.consumed.map((f, i) => this.baseName(f, `${key}.cursor.consumed[${i}]`)));
    let current: SourceCursor['current'];
    if (c.current !== null && c.current !== undefined) {
      const at = this.object(c.current, `${key}.cursor.current`, ['file', 'row']);
      current = { file: this.baseName(at.file, `${key}.cursor.current.file`), row: this.count(at.row, `${key}.cursor.current.row`, { whole: true, min: 0 }) };
    }
    const state: TaskState = {
      stats,
      cursor: { consumed, ...(current ? { current } : {}) },
      quarantined: this.count(t.quarantined, `${key}.quarantined`, { whole: true, min: 0 }),
      // Checkpoints written before dead-lettering existed have no skipped rows.
      skippedRows: t.skipped_rows === undefined ? 0 : this.count(t.skipped_rows, `${key}.skipped_rows`, { whole: true, min: 0 }),
    };
    return { state, ...(file ? { file } : {}) };
  }

  private maskFisher(raw: unknown, key: string): MaskFisher {
    const s = this.object(raw, key, ['mode', 'batchSize', 'numLayers', 'numHeads', 'intermediateSize', 'head', 'neuron', 'examples', 'batches', 'task', 'modelFingerprint', 'dataFingerprint']);
    if (s.mode !== 'batch' && s.mode !== 'example') this.fail(`${key}.mode`, '"batch" or "example"', s.mode);
    const shape = {
      numLayers: this.count(s.numLayers, `${key}.numLayers`, { whole: true, min: 1 }),
      numHeads: this.count(s.numHeads, `${key}.numHeads`, { whole: true, min: 1 }),
      intermediateSize: this.count(s.intermediateSize, `${key}.intermediateSize`, { whole: true, min: 1 }),
    };
    checkStatisticShape(`${this.file}: checkpoint ${key}`, shape);
    return {
      mode: s.mode,
      batchSize: this.count(s.batchSize, `${key}.batchSize`, { whole: true, min: 1 }),
      ...shape,
      head: this.sums(s.head, `${key}.head`, [shape.numLayers, shape.numHeads]),
      neuron: this.sums(s.neuron, `${key}.neuron`, [shape.numLayers, shape.intermediateSize]),
      // Decay scales the counts, so they need not be whole.
      examples: this.count(s.examples, `${key}.examples`, { whole: false, min: 0 }),
      batches: this.count(s.batches, `${key}.batches`, { whole: false, min: 0 }),
      ...this.origin(s, key),
    };
  }

  private origin(s: Json, key: string): { task: string; modelFingerprint: string; dataFingerprint: string } {
    return {
      task: this.text(s.task, `${key}.task`),
      modelFingerprint: this.text(s.modelFingerprint, `${key}.modelFingerprint`),
      dataFingerprint: this.text(s.dataFingerprint, `${key}.dataFingerprint`, /^[0-9a-f]{64}$/),
    };
  }

  /** A Gram task: counts and inputs here, the sums in the file it names (none before its first example). */
  private grams(raw: unknown, key: string): { stats: StreamGrams; file?: GramFileRef } {
    const s = this.object(raw, key, ['kind', 'inputs', 'examples', 'batches', 'task', 'modelFingerprint', 'dataFingerprint', 'file']);
    if (!Array.isArray(s.inputs) || s.inputs.length === 0) this.fail(`${key}.inputs`, 'a list of Gram inputs', s.inputs);
    const inputs = s.inputs.map((i, k): GramInput => {
      const input = this.object(i, `${key}.inputs[${k}]`, ['name', 'dim']);
      return { name: this.text(input.name, `${key}.inputs[${k}].name`), dim: this.count(input.dim, `${key}.inputs[${k}].dim`, { whole: true, min: 1 }) };
    });
    // Gram counts are whole: the stream job does not decay them.
    const examples = this.count(s.examples, `${key}.examples`, { whole: true, min: 0 });
    const stats: StreamGrams = {
      inputs,
      // Filled from the file (readGramFile); a task without examples starts from zeros of its model's inputs (openTask).
      grams: new Map(),
      examples,
      batches: this.count(s.batches, `${key}.batches`, { whole: true, min: 0 }),
      ...this.origin(s, key),
    };
    if (examples === 0) {
      if (s.file !== null && s.file !== undefined) this.fail(`${key}.file`, 'null (no examples yet)', s.file);
      return { stats };
    }
    const f = this.object(s.file, `${key}.file`, ['name', 'bytes', 'sha256']);
    const file: GramFileRef = {
      name: this.baseName(f.name, `${key}.file.name`),
      bytes: this.count(f.bytes, `${key}.file.bytes`, { whole: true, min: 1 }),
      sha256: this.text(f.sha256, `${key}.file.sha256`, /^[0-9a-f]{64}$/),
    };
    return { stats, file };
  }

  private published(raw: unknown, tasks: Record<string, TaskState>): PublishedMark {
    const p = this.object(raw, 'published', ['version', 'tasks']);
    const marks: PublishedMark['tasks'] = {};
    for (const [name, m] of Object.entries(this.object(p.tasks, 'published.tasks', Object.keys(tasks)))) {
      const key = `published.tasks.${name}`;
      const stats = tasks[name]!.stats;
      if (isGramStats(stats)) {
        const mark = this.object(m, key, ['examples']);
        marks[name] = { examples: this.count(mark.examples, `${key}.examples`, { whole: true, min: 0 }) };
        continue;
      }
      const mark = this.object(m, key, ['examples', 'head', 'neuron']);
      const { numLayers: L, numHeads: H, intermediateSize: I } = stats;
      marks[name] = {
        examples: this.count(mark.examples, `${key}.examples`, { whole: false, min: 0 }),
        head: this.sums(mark.head, `${key}.head`, [L, H]),
        neuron: this.sums(mark.neuron, `${key}.neuron`, [L, I]),
      };
    }
    return { version: this.count(p.version, 'published.version', { whole: true, min: 1 }), tasks: marks };
  }
}
