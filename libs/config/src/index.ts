export * from './schema.ts';
export * from './sections.ts';
export * from './read.ts';
export * from './run.ts';
export * from './stream.ts';
export * from './merge.ts';
