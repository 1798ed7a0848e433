import { bucketGrid, bucketRange, heatmapSvg } from './heatmap.ts';
import { escapeHtml } from './html.ts';
import { chartLegendHtml, resultsTableHtml, taskChartSvg, type ResultsTable } from './results.ts';

/** Mask-node Fisher of one task model: `head` [L,H] and `neuron` [L,I], row-major (a MaskFisher fits). */
export interface FisherMap {
  task: string;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  head: ArrayLike<number>;
  neuron: ArrayLike<number>;
  examples: number;
  /** Where it came from (a file path), shown under its heading. */
  source?: string;
}

export interface ReportInput {
  title: string;
  /** Label/value lines under the title (config, engine, version, ...). */
  facts?: Record<string, string>;
  results?: ResultsTable;
  fishers: readonly FisherMap[];
}

/** Neuron columns are averaged into this many buckets per layer, so an FFN of 3072 stays readable. */
export const NEURON_BUCKETS = 64;
/**
 * At most this many heads and layers are drawn (more are averaged into buckets, as neurons are), so
 * a page's size is bounded whatever a file's shape: every real encoder fits unbucketed.
 */
export const HEAD_BUCKETS = 64;
export const LAYER_BUCKETS = 64;

const STYLE = `
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1b1b1b;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:700;background:#e5f5e0}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dl.facts dt{color:#555}dl.facts dd{margin:0}
svg{display:block;margin:4px 0 12px}svg text.axis{font-size:11px;fill:#333}
line.zero{stroke:#888}line.own{stroke:#000;stroke-width:2;stroke-dasharray:4 2}
p.legend .key{margin-right:14px;white-space:nowrap}p.legend .swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
p.legend .swatch.own{border-top:2px dashed #000;height:0;vertical-align:3px}
.charts{display:flex;flex-wrap:wrap;gap:8px 28px}.muted{color:#666}
`;

/** One self-contained HTML page (inline CSS and SVG, no script, nothing fetched). */
export function renderReport(input: ReportInput): string {
  const body: string[] = [`<h1>${escapeHtml(input.title)}</h1>`];
  if (input.facts) {
    body.push(`<dl class="facts">${Object.entries(input.facts).map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>`);
  }
  if (input.results && input.results.rows.length > 0) {
    const tasks = [...new Set(input.results.rows.map((r) => r.task))];
    body.push('<h2>Results</h2>', '<p class="muted">★ marks the best method of each row (merge and task).</p>', resultsTableHtml(input.results));
    body.push('<h2>Each task\'s metric per method</h2>', chartLegendHtml(input.results.methods), '<div class="charts">');
    for (const task of tasks) {
      const metric = input.results.rows.find((r) => r.task === task)!.metric;
      body.push(`<figure><h3>${escapeHtml(task)} (${escapeHtml(metric)})</h3>${taskChartSvg(input.results, task)}</figure>`);
    }
    body.push('</div>');
  }
  if (input.fishers.length > 0) {
    body.push('<h2>Mask-node Fisher</h2>', '<p class="muted">Sums of squared gradients of each attention head\'s and FFN neuron\'s mask, per layer; colours on a log scale.</p>');
    input.fishers.forEach((f, i) => body.push(fisherSection(f, i)));
  }
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">`
    + `<title>${escapeHtml(input.title)}</title><style>${STYLE}</style></head><body>${body.join('\n')}</body></html>\n`;
}

function fisherSection(f: FisherMap, index: number): string {
  const heads = bucketGrid({ rows: f.numLayers, cols: f.numHeads, values: f.head }, { rows: LAYER_BUCKETS, cols: HEAD_BUCKETS });
  const neurons = bucketGrid({ rows: f.numLayers, cols: f.intermediateSize, values: f.neuron }, { rows: LAYER_BUCKETS, cols: NEURON_BUCKETS });
  const rowName = (r: number) => bucketRange(r, heads.rowWidth, f.numLayers);
  const headName = (c: number) => `head${heads.colWidth === 1 ? '' : 's'} ${bucketRange(c, heads.colWidth, f.numHeads)}`;
  const neuronName = (c: number) => `neuron${neurons.colWidth === 1 ? '' : 's'} ${bucketRange(c, neurons.colWidth, f.intermediateSize)}`;
  const mean = (what: string, width: number) => (width === 1 ? '' : ` (means over ${what} of ${width})`);
  return [
    `<section class="fisher" data-task="${escapeHtml(f.task)}"><h3>${escapeHtml(f.task)}</h3>`,
    `<p class="muted">${f.numLayers} layers, ${f.numHeads} heads, ${f.intermediateSize} FFN neurons; ${f.examples} examples${f.source ? `; ${escapeHtml(f.source)}` : ''}</p>`,
    `<h3>layer x head${mean('layers', heads.rowWidth)}${mean('heads', heads.colWidth)}</h3>`,
    heatmapSvg(heads.grid, { kind: 'head', task: f.task, columnAxis: 'head', rowName, columnName: headName, columnTick: (c) => `h${c * heads.colWidth}`, id: `fisher-${index}-head` }),
    `<h3>layer x neuron (mean over ${neurons.colWidth === 1 ? '1 neuron' : `buckets of ${neurons.colWidth} neurons`})${mean('layers', neurons.rowWidth)}</h3>`,
    heatmapSvg(neurons.grid, { kind: 'neuron', task: f.task, columnAxis: 'neuron bucket', rowName, columnName: neuronName, columnTick: (c) => String(c * neurons.colWidth), id: `fisher-${index}-neuron` }),
    '</section>',
  ].join('\n');
}
