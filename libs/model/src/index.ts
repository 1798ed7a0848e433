export * from './types.ts';
export * from './positions.ts';
