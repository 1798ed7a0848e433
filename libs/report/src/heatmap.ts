import { logScale, sequentialStops } from './colour.ts';
import { escapeHtml, formatValue } from './html.ts';

/** A row-major matrix of `rows` x `cols` values. */
export interface Grid {
  rows: number;
  cols: number;
  values: ArrayLike<number>;
}

/** Averages each row's columns into `buckets` consecutive groups (the last may be shorter). */
export function bucketColumns(grid: Grid, buckets: number): { grid: Grid; width: number } {
  const width = Math.ceil(grid.cols / Math.max(1, Math.min(buckets, grid.cols)));
  const cols = Math.ceil(grid.cols / width);
  const values = new Float64Array(grid.rows * cols);
  for (let r = 0; r < grid.rows; r++) {
    for (let b = 0; b < cols; b++) {
      const [start, end] = [b * width, Math.min(grid.cols, (b + 1) * width)];
      let sum = 0;
      for (let c = start; c < end; c++) sum += grid.values[r * grid.cols + c]!;
      values[r * cols + b] = sum / (end - start);
    }
  }
  return { grid: { rows: grid.rows, cols, values }, width };
}

export interface HeatmapOptions {
  /** Written as data-heatmap (with data-task) so a reader or a test can find the chart. */
  kind: string;
  task: string;
  /** What a column is ('head', 'neuron bucket'); `columnName(c)` names column c in tooltips, `columnTick(c)` on the axis. */
  columnAxis: string;
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
    parts.push(`<text x="${LEFT - 6}" y="${TOP + r * h + h / 2}" class="axis" text-anchor="end" dominant-baseline="middle">L${r}</text>`);
    for (let c = 0; c < grid.cols; c++) {
      const v = grid.values[r * grid.cols + c]!;
      parts.push(`<rect class="cell" data-layer="${r}" data-column="${c}" x="${LEFT + c * w}" y="${TOP + r * h}" width="${w}" height="${h}" fill="${scale.colour(v)}"><title>layer ${r}, ${escapeHtml(opts.columnName(c))}: ${formatValue(v)}</title></rect>`);
    }
  }
  // Column labels as often as the widest one fits (about 7 px per character).
  const widest = Math.max(...Array.from({ length: grid.cols }, (_, c) => opts.columnTick(c).length));
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
