export * from './errors.ts';
export * from './tensor.ts';
export * from './batch.ts';
export * from './atomic.ts';
export * from './progress.ts';
export * from './fingerprint.ts';
export * from './random.ts';
export * from './paths.ts';
