export * from './mask-fisher.ts';
export * from './accumulate.ts';
export * from './full-fisher.ts';
export * from './fisher-file.ts';
export * from './statistic-check.ts';
export * from './gram.ts';
