export * from './rule.ts';
export * from './weighted-average.ts';
export * from './task-vectors.ts';
export * from './mask-fisher-weights.ts';
export * from './registry.ts';
export * from './merge-encoders.ts';
export * from './cholesky.ts';
