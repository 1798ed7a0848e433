// Starts a thread of runInThread from the TypeScript sources (under tsx or vitest): registers tsx's
// loader in this thread, then loads the thread's module. Compiled modules are started directly.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.module);
