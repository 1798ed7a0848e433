import type { ModelBatch, RowSpan } from '@fisher-merge/data';
import { addContribution, addGramContribution, decayStats, firstNonfiniteOf, type ContributedBatch, type DeadBatch, type FisherContribution, type GramContribution } from '@fisher-merge/fisher';
import { isGramStats, type SourceCursor, type TaskState, type TaskStatistics } from './state.ts';

/** A file the source skipped whole: quarantined (moved away, never counted) or empty (nothing to count). */
export interface SkippedFile {
  skipped: { file: string; why: 'quarantined' | 'empty' };
}

/** Rows the source read: they wait in the batcher or in computation until the batch holding them is folded. */
export interface RowsRead {
  read: number;
}

/** Items a task's source puts in its stream beside the rows; they pass the batcher and the computation untouched. */
export type SourceMarker = SkippedFile | RowsRead;

/** One batch's share of a task's statistic: mask Fisher, or Gram sums (regmean). */
export type TaskContribution = FisherContribution | GramContribution;

/** What reaches a task's fold, in order of arrival. */
export type TaskItem = ContributedBatch<ModelBatch, TaskContribution> | DeadBatch<ModelBatch> | SourceMarker;

/** What the last item did: for the logs, the checkpoint requests and the flow credits it gives back. */
export type TaskEvent =
  | { kind: 'start' }
  /** Not running: its file left the tasks_dir, or the checkpoint holds it and it has not joined (yet). */
  | { kind: 'left' }
  /** Its model is loading: a new run starts from this state. */
  | { kind: 'joining' }
  | { kind: 'read'; rows: number }
  | { kind: 'folded'; rows: number; filesDone: string[]; sourcesDone: number }
  | { kind: 'dead'; rows: number; reason: string; filesDone: string[]; sourcesDone: number }
  | { kind: 'skipped'; file: string; why: SkippedFile['skipped']['why'] };

/** One task's state after each item: the value of its fold (one `scan`). */
export interface TaskProgress {
  task: string;
  /** What a checkpoint holds of the task. */
  state: TaskState;
  /**
   * Examples this run folded, plus those the checkpoint held beyond its last version: a version
   * records this count, and the difference is the examples since it (raw counts, decay aside).
   */
  folded: number;
  /** Rows read and not yet in a folded or dead batch. */
  buffered: number;
  event: TaskEvent;
}

export const isMarker = (item: object): item is SourceMarker => 'skipped' in item || 'read' in item;

/**
 * Moves a cursor over the rows of a batch, in order: a span that reaches its file's last row
 * finishes the file (consumed); otherwise the file becomes the current one, up to the span's end.
 * Returns the new cursor (the old one is left as it was: checkpoints and versions hold snapshots).
 */
export function advanceCursor(cursor: SourceCursor, spans: readonly RowSpan[]): { cursor: SourceCursor; filesDone: string[] } {
  let consumed: Set<string> | undefined;
  let current = cursor.current;
  const filesDone: string[] = [];
  for (const span of spans) {
    const end = span.row + span.rows;
    if (span.fileRows !== undefined && end >= span.fileRows) {
      (consumed ??= new Set(cursor.consumed)).add(span.file);
      filesDone.push(span.file);
      current = undefined;
    } else {
      current = { file: span.file, row: end };
    }
  }
  return { cursor: { consumed: consumed ?? cursor.consumed, ...(current ? { current } : {}) }, filesDone };
}

/** Where a batch's rows come from, for a log line: `file[first..end)` per span. */
export const describeRows = (spans: readonly RowSpan[]): string => spans.map((s) => `${s.file}[${s.row}..${s.row + s.rows})`).join(' + ');

/** Why a contribution cannot be folded (a value that is not finite, which would poison every later version), or undefined. */
function unfoldable(c: TaskContribution, batch: ModelBatch): string | undefined {
  const bad = firstNonfiniteOf('grams' in c ? [...c.grams].map(([input, g]) => [input, g.sum] as const) : [['head', c.head], ['neuron', c.neuron]]);
  return bad && `the engine's contribution holds ${bad.value} at ${bad.tensor} element ${bad.index}; rows ${describeRows(batch.spans)} are skipped, not folded`;
}

/** The statistics after a contribution: mask Fisher decays first (with `halfLife`); Gram sums are added in place (see addGramContribution). */
function addTo(stats: TaskStatistics, c: TaskContribution, halfLife: number | undefined): TaskStatistics {
  if (isGramStats(stats)) {
    if (!('grams' in c)) throw new Error(`a mask Fisher contribution cannot go into task ${stats.task}'s Gram sums`);
    return { ...addGramContribution(stats, c), batches: stats.batches + 1 };
  }
  if ('grams' in c) throw new Error(`a Gram contribution cannot go into task ${stats.task}'s mask Fisher`);
  return addContribution(halfLife ? decayStats(stats, 0.5 ** (c.examples / halfLife)) : stats, c);
}

/**
 * The reducer of a task's `scan`. A contributed batch is folded into the statistics (after decay,
 * with `halfLife`) and the cursor moves over its rows in the same step, so every state is
 * consistent: the statistics hold exactly the rows before the cursor. A dead batch, or one whose
 * contribution is not finite, moves the cursor and counts its rows as skipped; a skipped file
 * changes the cursor only; rows read are counted as buffered until a batch takes them.
 */
export function foldTaskItem(halfLife: number | undefined): (progress: TaskProgress, item: TaskItem) => TaskProgress {
  return (progress, item) => {
    const { state } = progress;
    if ('read' in item) return { ...progress, buffered: progress.buffered + item.read, event: { kind: 'read', rows: item.read } };
    if ('skipped' in item) {
      const { file, why } = item.skipped;
      // A quarantined file is moved away, an empty one is finished; neither holds a row of the statistics.
      const current = state.cursor.current?.file === file ? undefined : state.cursor.current;
      const consumed = why === 'empty' ? new Set(state.cursor.consumed).add(file) : state.cursor.consumed;
      const cursor: SourceCursor = { consumed, ...(current ? { current } : {}) };
      return { ...progress, state: { ...state, cursor, quarantined: state.quarantined + (why === 'quarantined' ? 1 : 0) }, event: { kind: 'skipped', file, why } };
    }
    const rows = item.batch.tokens.batchSize;
    const { cursor, filesDone } = advanceCursor(state.cursor, item.batch.spans);
    const sourcesDone = item.batch.completedSources.length;
    const skip = (reason: string): TaskProgress => ({
      ...progress,
      state: { ...state, cursor, skippedRows: state.skippedRows + rows },
      buffered: progress.buffered - rows,
      event: { kind: 'dead', rows, reason, filesDone, sourcesDone },
    });
    if ('dead' in item) return skip(item.dead.reason);
    const unfit = unfoldable(item.contribution, item.batch);
    if (unfit !== undefined) return skip(unfit);
    return {
      ...progress,
      state: { ...state, stats: addTo(state.stats, item.contribution, halfLife), cursor },
      folded: progress.folded + rows,
      buffered: progress.buffered - rows,
      event: { kind: 'folded', rows, filesDone, sourcesDone },
    };
  };
}
