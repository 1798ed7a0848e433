export * from './report.ts';
export * from './results.ts';
export * from './heatmap.ts';
export * from './model-card.ts';
