export * from './weighted-average.ts';
export * from './rules.ts';
export * from './merge-encoders.ts';
