// Starts a tokenizer thread from the TypeScript sources (under tsx or vitest): registers tsx's loader
// in this thread, then loads the worker. The compiled package starts tokenizer-worker.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./tokenizer-worker.ts');
