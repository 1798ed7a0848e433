import { UserError } from '@fisher-merge/core';

/** One coefficient to search and the values it may take; `start` is its default. */
export interface Coefficient {
  name: string;
  values: readonly number[];
  start: number;
}

export type SearchStrategy = 'grid' | 'coordinate';

export interface SearchResult {
  /** The best point found (ties: the earliest evaluated, so the defaults win a draw). */
  best: Record<string, number>;
  bestScore: number;
  /** The defaults' score (always the first evaluation). */
  startScore: number;
  evaluations: number;
}

/**
 * Maximises `score` over coefficients with at most `budget` evaluations, the defaults first.
 * `grid` tries every combination of the values (refused when there are more than the budget);
 * `coordinate` (coordinate ascent) tries each value of one coefficient with the others fixed at the
 * best so far, coefficient after coefficient, until a whole pass brings no gain or the budget is spent.
 */
export async function searchCoefficients(
  coefficients: readonly Coefficient[],
  opts: { strategy: SearchStrategy; budget: number },
  score: (point: Record<string, number>) => Promise<number>,
): Promise<SearchResult> {
  const seen = new Map<string, number>();
  const start = Object.fromEntries(coefficients.map((c) => [c.name, c.start]));
  let best = start;
  let bestScore = -Infinity;
  const evaluate = async (point: Record<string, number>): Promise<void> => {
    const key = coefficients.map((c) => point[c.name]).join(',');
    if (seen.has(key) || seen.size >= opts.budget) return;
    const value = await score(point);
    seen.set(key, value);
    if (value > bestScore) [best, bestScore] = [point, value];
  };
  await evaluate(start);
  const startScore = bestScore;
  if (opts.strategy === 'grid') {
    const points = coefficients.reduce<Record<string, number>[]>((acc, c) => acc.flatMap((p) => c.values.map((v) => ({ ...p, [c.name]: v }))), [{}]);
    const size = new Set([...points.map((p) => coefficients.map((c) => p[c.name]).join(',')), coefficients.map((c) => c.start).join(',')]).size;
    if (size > opts.budget) throw new UserError(`search: the grid has ${size} points (defaults included) but the budget is ${opts.budget} evaluations; raise search.budget or use strategy: coordinate`);
    for (const p of points) await evaluate(p);
  } else {
    for (let improved = true; improved && seen.size < opts.budget;) {
      improved = false;
      for (const c of coefficients) {
        const before = bestScore;
        const centre = best;
        for (const v of c.values) await evaluate({ ...centre, [c.name]: v });
        if (bestScore > before) improved = true;
      }
    }
  }
  return { best, bestScore, startScore, evaluations: seen.size };
}
