export * from './config.ts';
export * from './state.ts';
export * from './ledger.ts';
export * from './publish.ts';
export * from './status.ts';
export * from './stream-job.ts';
export * from './operators.ts';
export * from './queue.ts';
