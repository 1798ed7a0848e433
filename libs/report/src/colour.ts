/** Viridis at five stops: perceptually uniform and readable in greyscale and by colour-blind readers. */
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]] as const;

/** The colour at `t` in [0, 1] of the sequential scale, as `rgb(r,g,b)`. */
export function sequentialColour(t: number): string {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [VIRIDIS[i]!, VIRIDIS[i + 1]!];
  return `rgb(${a.map((v, k) => Math.round(v + (b[k]! - v) * f)).join(',')})`;
}

/** Stops for an SVG gradient that draws the same scale. */
export const sequentialStops = (): string =>
  VIRIDIS.map((_, i) => `<stop offset="${i / (VIRIDIS.length - 1)}" stop-color="${sequentialColour(i / (VIRIDIS.length - 1))}"/>`).join('');

/** Distinct colours for the methods of a chart (Okabe-Ito, colour-blind safe). */
const CATEGORICAL = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442', '#000000'];
export const categoricalColour = (i: number): string => CATEGORICAL[i % CATEGORICAL.length]!;

/**
 * A log10 colour scale over the positive values (Fisher sums span orders of magnitude); zeros and
 * non-finite values take the lowest colour.
 */
export function logScale(values: ArrayLike<number>): { min: number; max: number; colour: (v: number) => string } {
  let min = Infinity, max = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v > 0 && Number.isFinite(v)) [min, max] = [Math.min(min, v), Math.max(max, v)];
  }
  if (max === 0) return { min: 0, max: 0, colour: () => sequentialColour(0) };
  const [lo, span] = [Math.log10(min), Math.log10(max) - Math.log10(min)];
  return { min, max, colour: (v) => sequentialColour(v > 0 && span > 0 ? (Math.log10(v) - lo) / span : v > 0 ? 1 : 0) };
}
