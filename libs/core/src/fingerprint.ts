import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** sha256 over the given files' bytes, in the order given (hex). */
export async function sha256Files(paths: readonly string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const p of paths) {
    for await (const chunk of createReadStream(p)) hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}
