import { logScale, sequentialStops } from './colour.ts';
import { escapeHtml, formatValue } from './html.ts';

/** A row-major matrix of `rows` x `cols` values. */
export interface Grid {
  rows: number;
  cols: number;
  values: ArrayLike<number>;
}

/** Consecutive indices per bucket so that `n` indices fill at most `buckets` buckets (the last may be shorter). */
const bucketWidth = (n: number, buckets: number): number => Math.ceil(n / Math.max(1, Math.min(buckets, n)));

/**
 * Averages blocks of consecutive rows and columns so the grid has at most `rows` x `cols` cells:
 * a drawing's size is then bounded whatever the statistic's shape. Widths are the indices per bucket.
 */
export function bucketGrid(grid: Grid, buckets: { rows: number; cols: number }): { grid: Grid; rowWidth: number; colWidth: number } {
  const [rowWidth, colWidth] = [bucketWidth(grid.rows, buckets.rows), bucketWidth(grid.cols, buckets.cols)];
  const [rows, cols] = [Math.ceil(grid.rows / rowWidth), Math.ceil(grid.cols / colWidth)];
  const values = new Float64Array(rows * cols);
  for (let br = 0; br < rows; br++) {
    const [r0, r1] = [br * rowWidth, Math.min(grid.rows, (br + 1) * rowWidth)];
    for (let bc = 0; bc < cols; bc++) {
      const [c0, c1] = [bc * colWidth, Math.min(grid.cols, (bc + 1) * colWidth)];
      let sum = 0;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) sum += grid.values[r * grid.cols + c]!;
      values[br * cols + bc] = sum / ((r1 - r0) * (c1 - c0));
    }
  }
  return { grid: { rows, cols, values }, rowWidth, colWidth };
}

/** The name of bucket `i` of `width` indices out of `n`: `3` alone, or the range `64-127`. */
export const bucketRange = (i: number, width: number, n: number): string => (width === 1 ? String(i) : `${i * width}-${Math.min(n, (i + 1) * width) - 1}`);

export interface HeatmapOptions {
  /** Written as data-heatmap (with data-task) so a reader or a test can find the chart. */
  kind: string;
  task: string;
  /** What a column is ('head', 'neuron bucket'); `columnName(c)` names column c in tooltips, `columnTick(c)` on the axis. */
  columnAxis: string;
  /** Row r's layers, on the axis and in tooltips (`3`, or `0-9` for a bucket of layers). */
  rowName: (r: number) => string;
  columnName: (c: number) => string;
  columnTick: (c: number) => string;
  /** Unique within the document (names the legend's gradient). */
  id: string;
}

const CELL_MAX_W = 36, CELL_MAX_H = 24, GRID_W = 560, GRID_H = 300, LEFT = 64, TOP = 8, LEGEND_H = 54;

/** Layers as rows, columns as cells coloured on a log scale, with a colour-scale legend below. */
export function heatmapSvg(grid: Grid, opts: HeatmapOptions): string {
  const w = Math.max(4, Math.min(CELL_MAX_W, Math.floor(GRID_W / grid.cols)));
  const h = Math.max(6, Math.min(CELL_MAX_H, Math.floor(GRID_H / grid.rows)));
  const scale = logScale(grid.values);
  const [width, gridBottom] = [LEFT + Math.max(grid.cols * w, 240) + 16, TOP + grid.rows * h];
  const parts: string[] = [];
  for (let r = 0; r < grid.rows; r++) {
    const layer = opts.rowName(r);
    parts.push(`<text x="${LEFT - 6}" y="${TOP + r * h + h / 2}" class="axis" text-anchor="end" dominant-baseline="middle">L${layer}</text>`);
    for (let c = 0; c < grid.cols; c++) {
      const v = grid.values[r * grid.cols + c]!;
      parts.push(`<rect class="cell" data-layer="${r}" data-column="${c}" x="${LEFT + c * w}" y="${TOP + r * h}" width="${w}" height="${h}" fill="${scale.colour(v)}"><title>layer ${layer}, ${escapeHtml(opts.columnName(c))}: ${formatValue(v)}</title></rect>`);
    }
  }
  // Column labels as often as the widest one fits (about 7 px per character); a loop, not a spread, over the columns.
  let widest = 0;
  for (let c = 0; c < grid.cols; c++) widest = Math.max(widest, opts.columnTick(c).length);
  const step = Math.max(1, Math.ceil((7 * widest + 10) / w));
  for (let c = 0; c < grid.cols; c += step) {
    parts.push(`<text x="${LEFT + c * w + w / 2}" y="${gridBottom + 14}" class="axis" text-anchor="middle">${escapeHtml(opts.columnTick(c))}</text>`);
  }
  const legendY = gridBottom + 30;
  const legend = scale.max === 0
    ? `<text x="${LEFT}" y="${legendY + 10}" class="axis">all values are 0</text>`
    : `<defs><linearGradient id="${opts.id}-scale">${sequentialStops()}</linearGradient></defs>`
      + `<rect class="legend" x="${LEFT}" y="${legendY}" width="240" height="10" fill="url(#${opts.id}-scale)"/>`
      + `<text x="${LEFT}" y="${legendY + 24}" class="axis">${formatValue(scale.min)}</text>`
      + `<text x="${LEFT + 240}" y="${legendY + 24}" class="axis" text-anchor="end">${formatValue(scale.max)}</text>`
      + `<text x="${LEFT + 120}" y="${legendY + 24}" class="axis" text-anchor="middle">Fisher (log scale)</text>`;
  return `<svg class="heatmap" data-heatmap="${escapeHtml(opts.kind)}" data-task="${escapeHtml(opts.task)}" data-rows="${grid.rows}" data-columns="${grid.cols}" `
    + `xmlns="http://www.w3.org/2000/svg" width="${width}" height="${legendY + LEGEND_H - 20}" role="img" aria-label="${escapeHtml(`${opts.task}: Fisher per layer and ${opts.columnAxis}`)}">`
    + `${parts.join('')}${legend}</svg>`;
}
