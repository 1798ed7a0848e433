import { parentPort, Worker, workerData } from 'node:worker_threads';
import { isUserError, UserError } from './errors.ts';

/** What a thread of `runInThread` posts back. */
type ThreadReply<T> = { result: T } | { error: { message: string; user: boolean } };

/** What a thread of `runInThread` is started with: its input, and (from the sources) the module to load. */
interface ThreadStart {
  input: unknown;
  module?: string;
}

// From the .ts sources (tsx, vitest) a thread first registers tsx's loader, then loads its module; the compiled thread module runs as is.
const TSX_THREAD = new URL('./thread-tsx.mjs', import.meta.url);

/**
 * The module `name` beside the caller's (`import.meta.url`), compiled or not as the caller is: the
 * argument `runInThread` takes.
 */
export function threadModule(callerUrl: string, name: string): URL {
  return new URL(`./${name}${callerUrl.endsWith('.ts') ? '.ts' : '.js'}`, callerUrl);
}

/**
 * Runs a module that calls `serveThread` in a worker thread (node:worker_threads) with `input`
 * (copied there) and resolves with what it returns: the caller's event loop stays free meanwhile.
 * A UserError in the thread is a UserError here.
 */
export function runInThread<T>(module: URL, input: unknown): Promise<T> {
  const fromSources = module.pathname.endsWith('.ts');
  const start: ThreadStart = { input, ...(fromSources ? { module: module.href } : {}) };
  return new Promise((resolve, reject) => {
    const thread = new Worker(fromSources ? TSX_THREAD : module, { workerData: start });
    let replied = false;
    thread.once('message', (reply: ThreadReply<T>) => {
      replied = true;
      if ('result' in reply) resolve(reply.result);
      else reject(reply.error.user ? new UserError(reply.error.message) : new Error(reply.error.message));
    });
    thread.once('error', (e) => {
      replied = true;
      reject(e);
    });
    thread.once('exit', (code) => {
      if (!replied) reject(new Error(`the thread of ${module.pathname} exited (code ${code}) without a result`));
    });
  });
}

/** The body of a thread module: runs `work` on the input `runInThread` gave and posts its result, or its error as a message. */
export async function serveThread<I, T>(work: (input: I) => Promise<T>): Promise<void> {
  let reply: ThreadReply<T>;
  try {
    reply = { result: await work((workerData as ThreadStart).input as I) };
  } catch (e) {
    reply = { error: { message: e instanceof Error ? e.message : String(e), user: isUserError(e) } };
  }
  parentPort!.postMessage(reply);
}
