// Starts a merge thread from the TypeScript sources (under tsx or vitest): registers tsx's loader in
// this thread, then loads the thread's module. The compiled package starts merge-thread.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./merge-thread.ts');
