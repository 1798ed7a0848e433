import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';

/** Digests of files already hashed, keyed by path and the stat fields that change when a file does. */
const digests = new Map<string, string>();

/**
 * sha256 over the given files' bytes, in the order given (hex). A job that opens the same checkpoint
 * many times (every merge of a run, every evaluation) hashes its files once.
 */
export async function sha256Files(paths: readonly string[]): Promise<string> {
  const stats = await Promise.all(paths.map((p) => fs.stat(p)));
  const key = paths.map((p, i) => `${p}\0${stats[i]!.ino}\0${stats[i]!.size}\0${stats[i]!.mtimeMs}`).join('\0');
  const known = digests.get(key);
  if (known) return known;
  const hash = createHash('sha256');
  for (const p of paths) {
    for await (const chunk of createReadStream(p)) hash.update(chunk as Buffer);
  }
  const digest = hash.digest('hex');
  digests.set(key, digest);
  return digest;
}
