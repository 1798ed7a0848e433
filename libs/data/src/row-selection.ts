import { SeededRandom, UserError } from '@fisher-merge/core';

/**
 * Which rows to read: the first `n` in source order, or a seeded random sample of `n` (kept in
 * source order). Decided from global row ids alone, so the result does not depend on batch sizes,
 * and applied by the sources so that they can skip row groups and stop early.
 */
export type RowSampling = { kind: 'first'; n: number } | { kind: 'random'; n: number; seed: number };

export interface RowSelection {
  /** Kept rows among global rows [start, start + count), as offsets from `start` (ascending), or 'all'. */
  pick(start: number, count: number): Int32Array | 'all';
  /** True when no row at or after `start` is kept, so reading can stop. */
  exhaustedAt(start: number): boolean;
}

const everyRow: RowSelection = { pick: () => 'all', exhaustedAt: () => false };

/** Builds the selection for a source; `totalRows` is needed for random sampling (undefined for streams). */
export function selectRows(sampling: RowSampling | undefined, totalRows: number | undefined, sourceName: string): RowSelection {
  if (!sampling) return everyRow;
  if (!Number.isInteger(sampling.n) || sampling.n < 1) throw new UserError(`sample size must be an integer >= 1, got ${sampling.n}`);
  if (sampling.kind === 'first') return firstRows(sampling.n);
  if (totalRows === undefined) {
    throw new UserError(`${sourceName}: a random sample needs the row count up front, which an Arrow IPC stream does not give; use a first-N limit or Parquet input`);
  }
  return sortedRowSet(sampleIds(totalRows, sampling.n, sampling.seed));
}

function firstRows(n: number): RowSelection {
  return {
    pick(start, count) {
      if (start + count <= n) return 'all';
      return Int32Array.from({ length: Math.max(0, n - start) }, (_, i) => i);
    },
    exhaustedAt: (start) => start >= n,
  };
}

/** `n` distinct ids out of [0, total), ascending (Floyd's algorithm: n draws, no array of size total). */
export function sampleIds(total: number, n: number, seed: number): Float64Array {
  if (n >= total) return Float64Array.from({ length: total }, (_, i) => i);
  const random = new SeededRandom(seed);
  const chosen = new Set<number>();
  for (let j = total - n; j < total; j++) {
    const t = random.int(j + 1);
    chosen.add(chosen.has(t) ? j : t);
  }
  return Float64Array.from(chosen).sort();
}

function sortedRowSet(ids: Float64Array): RowSelection {
  const firstAtOrAfter = (x: number): number => {
    let lo = 0;
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ids[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return {
    pick(start, count) {
      const from = firstAtOrAfter(start);
      const to = firstAtOrAfter(start + count);
      if (to - from === count) return 'all';
      return Int32Array.from(ids.subarray(from, to), (id) => id - start);
    },
    exhaustedAt: (start) => ids.length === 0 || start > ids[ids.length - 1]!,
  };
}
