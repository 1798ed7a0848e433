export * from './mask-fisher.ts';
export * from './accumulate.ts';
