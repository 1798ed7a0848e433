export * from './types.ts';
export * from './positions.ts';
export * from './limits.ts';
export * from './family.ts';
export * from './schema.ts';
export * from './registry.ts';
export * from './config.ts';
export * from './load.ts';
