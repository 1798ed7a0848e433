export * from '@fisher-merge/task-model';
export * from './fisher-job.ts';
export * from '@fisher-merge/merge-writer';
export * from './run-config.ts';
export * from './run-job.ts';
export * from './statistics.ts';
export * from './merge-config.ts';
export * from './coefficient-search.ts';
