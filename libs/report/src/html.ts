/** Text for HTML element content and attribute values. */
export const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** A metric for a table cell: 4 decimals, '-' when there is none. */
export const formatMetric = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(4));

/** A Fisher value for a legend or tooltip: 3 significant digits, exponent form when far from 1. */
export const formatValue = (v: number): string => (v !== 0 && (Math.abs(v) < 1e-2 || Math.abs(v) >= 1e4) ? v.toExponential(2) : v.toPrecision(3));
