export * from './types.ts';
export * from './positions.ts';
export * from './limits.ts';
export * from './family.ts';
export * from './families/index.ts';
export * from './config.ts';
export * from './load.ts';
export * from './weights-map.ts';
