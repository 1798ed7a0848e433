export * from './redis.ts';
export * from './keys.ts';
export * from './codec.ts';
export * from './coordinator.ts';
export * from './worker.ts';
export * from './status.ts';
export * from './timing.ts';
export * from './announcements.ts';
