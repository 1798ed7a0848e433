import { UserError } from '@fisher-merge/core';
import { firstNonfinite, nonfiniteAllowed } from '@fisher-merge/checkpoint';
import { ENCODER_LIMITS } from '@fisher-merge/model';

/** Where a statistic's values come from, for the message: the file (or checkpoint key) and the tensor in it. */
export interface StatisticPlace {
  file: string;
  tensor: string;
  /** Its shape; a 2-d tensor's bad element is also named by row and column. */
  shape?: readonly number[];
}

/**
 * Checks a statistic's values as weights are checked, for every kind of statistic file (mask and
 * full Fisher, Gram matrices) and every statistic restored from a checkpoint: each value finite
 * (unless --allow-nonfinite) and, for a sum of squares (a Fisher), >= 0. Otherwise one UserError
 * naming the file, the tensor and the first bad element.
 */
export function checkStatisticValues(place: StatisticPlace, values: ArrayLike<number>, { sumOfSquares }: { sumOfSquares: boolean }): void {
  const nonfinite = nonfiniteAllowed() ? -1 : firstNonfinite(values);
  let bad = nonfinite;
  if (sumOfSquares) {
    const end = nonfinite >= 0 ? nonfinite : values.length;
    for (let i = 0; i < end; i++) {
      if (values[i]! < 0) {
        bad = i;
        break;
      }
    }
  }
  if (bad < 0) return;
  const v = values[bad]!;
  const cols = place.shape?.length === 2 ? place.shape[1]! : 0;
  const at = cols > 0 ? `element ${bad} ([${Math.floor(bad / cols)}, ${bad % cols}])` : `element ${bad}`;
  const why = Number.isFinite(v)
    ? 'a Fisher statistic is a sum of squares and cannot be negative'
    : 'statistics must be finite (--allow-nonfinite to load them anyway)';
  throw new UserError(`${place.file}: tensor '${place.tensor}' holds ${v} at ${at}; ${why}`);
}

/** The first value that is not finite among named arrays (a batch's contribution, say), or undefined when all are. */
export function firstNonfiniteOf(arrays: Iterable<readonly [string, ArrayLike<number>]>): { tensor: string; index: number; value: number } | undefined {
  for (const [tensor, values] of arrays) {
    const index = firstNonfinite(values);
    if (index >= 0) return { tensor, index, value: values[index]! };
  }
  return undefined;
}

/** A UserError unless a mask statistic's shape lies within the model-size limits of libs/model. */
export function checkStatisticShape(file: string, shape: { numLayers: number; numHeads: number; intermediateSize: number }): void {
  for (const key of ['numLayers', 'numHeads', 'intermediateSize'] as const) {
    if (shape[key] > ENCODER_LIMITS[key]) {
      throw new UserError(`${file}: ${key} ${shape[key]} is beyond the largest encoder these tools accept (${ENCODER_LIMITS[key]}); a corrupt statistic file?`);
    }
  }
}

/**
 * A UserError unless a statistic file's counts are whole and agree: at least one example, and for a
 * mask Fisher at least one batch, no more batches than examples, and (batch mode) no more examples
 * than its batches of `batch_size` hold.
 */
export function checkExampleCounts(file: string, counts: { examples: number; batches?: number; mode?: string; batchSize?: number }): void {
  const { examples, batches, mode, batchSize } = counts;
  if (!Number.isSafeInteger(examples) || examples < 1) throw new UserError(`${file}: metadata 'examples' must be a whole number >= 1, got ${examples}`);
  if (batches === undefined) return;
  if (!Number.isSafeInteger(batches) || batches < 1 || batches > examples) {
    throw new UserError(`${file}: metadata 'batches' must be a whole number from 1 to the ${examples} examples, got ${batches}`);
  }
  if (mode === 'batch' && batchSize !== undefined && examples > batches * batchSize) {
    throw new UserError(`${file}: metadata says ${examples} examples in ${batches} batches of at most ${batchSize}; they disagree`);
  }
}
