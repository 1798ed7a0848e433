import { promises as fs } from 'node:fs';
import { Worker } from 'node:worker_threads';

/** Digests of files hashed or being hashed, keyed by path and the stat fields that change when a file does. */
const digests = new Map<string, Promise<string>>();

// Hashing runs on its own thread, so a command that hashes a checkpoint while it loads it (the
// single-threaded part of every job) pays no extra time; 8 MiB reads keep it CPU-bound.
const HASH_THREAD = `
const { createHash } = require('node:crypto');
const { closeSync, openSync, readSync } = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');
const hash = createHash('sha256');
const chunk = Buffer.allocUnsafe(8 << 20);
for (const p of workerData.paths) {
  const fd = openSync(p, 'r');
  try {
    for (let n; (n = readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hash.update(chunk.subarray(0, n));
  } finally {
    closeSync(fd);
  }
}
parentPort.postMessage(hash.digest('hex'));
`;

function hashOnThread(paths: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(HASH_THREAD, { eval: true, workerData: { paths } });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`sha256 thread exited with code ${code} before a digest`)));
  });
}

/**
 * sha256 over the given files' bytes, in the order given (hex). A job that opens the same checkpoint
 * many times (every merge of a run, every evaluation) hashes its files once.
 */
export async function sha256Files(paths: readonly string[]): Promise<string> {
  const stats = await Promise.all(paths.map((p) => fs.stat(p)));
  const key = paths.map((p, i) => `${p}\0${stats[i]!.ino}\0${stats[i]!.size}\0${stats[i]!.mtimeMs}`).join('\0');
  let digest = digests.get(key);
  if (!digest) {
    digest = hashOnThread(paths);
    digests.set(key, digest);
    // A failed hash is not remembered: the next call tries again.
    digest.catch(() => digests.delete(key));
  }
  return digest;
}
