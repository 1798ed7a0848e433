import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/** A unique temporary name next to `target` (same directory, so a rename puts it in place). */
export function tempPath(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Writes a file so that readers see either the old content or the complete new one, never a part. */
export async function writeFileAtomic(target: string, data: string | Uint8Array | Uint8Array[]): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmp = tempPath(target);
  const handle = await fs.open(tmp, 'w');
  try {
    const chunks = typeof data === 'string' ? [Buffer.from(data)] : Array.isArray(data) ? data : [data];
    for (const chunk of chunks) await handle.write(chunk);
    await handle.sync();
  } catch (e) {
    await handle.close();
    await fs.rm(tmp, { force: true });
    throw e;
  }
  await handle.close();
  await fs.rename(tmp, target);
}

/**
 * Builds a directory under a temporary name and renames it into place only when `fill` succeeds.
 * An existing target is replaced; on failure nothing is left behind.
 */
export async function writeDirAtomic(target: string, fill: (dir: string) => Promise<void>): Promise<void> {
  await fs.mkdir(path.dirname(path.resolve(target)), { recursive: true });
  const tmp = tempPath(path.resolve(target));
  await fs.mkdir(tmp);
  try {
    await fill(tmp);
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw e;
  }
  const old = `${tmp}.old`;
  const hadOld = await fs.rename(target, old).then(() => true, () => false);
  await fs.rename(tmp, target);
  if (hadOld) await fs.rm(old, { recursive: true, force: true });
}
