export * from './task-model.ts';
export * from './fisher-job.ts';
export * from './merge-job.ts';
export * from './eval-job.ts';
export * from './run-config.ts';
export * from './run-job.ts';
export * from './statistics.ts';
export * from './merge-config.ts';
