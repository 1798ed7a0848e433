import { categoricalColour } from './colour.ts';
import { escapeHtml, formatMetric } from './html.ts';

/** One merge x task row of a results table: the task's own model and each method's merged model. */
export interface ResultRow {
  merge: string;
  task: string;
  metric: string;
  own?: number;
  /** One per method of the table, in its order; undefined where the method has no score. */
  scores: (number | undefined)[];
}

export interface ResultsTable {
  methods: string[];
  rows: ResultRow[];
}

/** Indices of the row's highest score (all of them on a tie; none without scores). */
export function bestMethods(row: ResultRow): number[] {
  const defined = row.scores.filter((s): s is number => s !== undefined && Number.isFinite(s));
  if (defined.length === 0) return [];
  const best = Math.max(...defined);
  return row.scores.flatMap((s, i) => (s === best ? [i] : []));
}

/** The table with each row's best method marked (class "best" and a star). */
export function resultsTableHtml(table: ResultsTable): string {
  const head = ['merge', 'task', 'metric', 'own model', ...table.methods].map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const rows = table.rows.map((row) => {
    const best = new Set(bestMethods(row));
    const scores = row.scores.map((s, i) => (best.has(i)
      ? `<td class="num best" data-best="true" title="best for this task">★ ${formatMetric(s)}</td>`
      : `<td class="num">${formatMetric(s)}</td>`));
    return `<tr><td>${escapeHtml(row.merge)}</td><td>${escapeHtml(row.task)}</td><td>${escapeHtml(row.metric)}</td><td class="num">${formatMetric(row.own)}</td>${scores.join('')}</tr>`;
  });
  return `<table class="results"><thead><tr>${head}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

const BAR_W = 14, GAP = 18, PLOT_H = 160, LEFT = 48, TOP = 10;

/**
 * One task's metric per method: a group of bars per merge the task is in, and its own model's
 * score as a dashed line.
 */
export function taskChartSvg(table: ResultsTable, task: string): string {
  const rows = table.rows.filter((r) => r.task === task);
  const values = rows.flatMap((r) => [...r.scores, r.own]).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const [lo, hi] = [Math.min(0, ...values), Math.max(0, ...values)];
  const span = hi - lo || 1;
  const y = (v: number) => TOP + ((hi - v) / span) * PLOT_H;
  const groupW = table.methods.length * BAR_W + GAP;
  const width = LEFT + rows.length * groupW + 20;
  const parts = [
    `<line x1="${LEFT}" x2="${width - 10}" y1="${y(0)}" y2="${y(0)}" class="zero"/>`,
    `<text x="${LEFT - 6}" y="${y(hi)}" class="axis" text-anchor="end" dominant-baseline="middle">${hi.toFixed(2)}</text>`,
    `<text x="${LEFT - 6}" y="${y(lo)}" class="axis" text-anchor="end" dominant-baseline="middle">${lo.toFixed(2)}</text>`,
  ];
  rows.forEach((row, g) => {
    const x0 = LEFT + g * groupW + GAP / 2;
    row.scores.forEach((s, m) => {
      if (s === undefined || !Number.isFinite(s)) return;
      const [top, bottom] = [Math.min(y(s), y(0)), Math.max(y(s), y(0))];
      parts.push(`<rect class="bar" data-method="${escapeHtml(table.methods[m]!)}" x="${x0 + m * BAR_W}" y="${top}" width="${BAR_W - 2}" height="${Math.max(1, bottom - top)}" fill="${categoricalColour(m)}"><title>${escapeHtml(`${row.merge} · ${table.methods[m]}: ${formatMetric(s)}`)}</title></rect>`);
    });
    if (row.own !== undefined) {
      parts.push(`<line class="own" x1="${x0 - 3}" x2="${x0 + table.methods.length * BAR_W + 1}" y1="${y(row.own)}" y2="${y(row.own)}"><title>own model: ${formatMetric(row.own)}</title></line>`);
    }
    parts.push(`<text x="${x0 + (table.methods.length * BAR_W) / 2}" y="${TOP + PLOT_H + 14}" class="axis" text-anchor="middle">${escapeHtml(row.merge)}</text>`);
  });
  const metric = rows[0]?.metric ?? '';
  return `<svg class="chart" data-task="${escapeHtml(task)}" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${TOP + PLOT_H + 24}" role="img" aria-label="${escapeHtml(`${task} ${metric} per method`)}">${parts.join('')}</svg>`;
}

/** The methods' colours, and the own model's dashed line. */
export function chartLegendHtml(methods: readonly string[]): string {
  const items = methods.map((m, i) => `<span class="key"><span class="swatch" style="background:${categoricalColour(i)}"></span>${escapeHtml(m)}</span>`);
  return `<p class="legend">${items.join('')}<span class="key"><span class="swatch own"></span>own model</span></p>`;
}
