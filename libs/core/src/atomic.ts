import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError, fileSystemReason } from './errors.ts';

/** A unique temporary name next to `target` (same directory, so a rename puts it in place). */
export function tempPath(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * A file-system failure while writing `target` (its temporary name included) as one line naming the
 * target; any other error is returned as it is. Every writer of an output reports failures this way.
 * Not isFileSystemError: the errors of writeSync and of write streams carry a code but no path.
 */
export function writeError(target: string, e: unknown): unknown {
  const errno = e as NodeJS.ErrnoException;
  return e instanceof Error && !(e instanceof UserError) && typeof errno.code === 'string' ? new UserError(`${target}: cannot write: ${fileSystemReason(errno)}`) : e;
}

/** Writes a file so that readers see either the old content or the complete new one, never a part; nothing is left behind on failure. */
export async function writeFileAtomic(target: string, data: string | Uint8Array | Uint8Array[]): Promise<void> {
  const tmp = tempPath(target);
  try {
    await fs.mkdir(path.dirname(target), { recursive: true });
    const handle = await fs.open(tmp, 'w');
    try {
      const chunks = typeof data === 'string' ? [Buffer.from(data)] : Array.isArray(data) ? data : [data];
      for (const chunk of chunks) await handle.write(chunk);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, target);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw writeError(target, e);
  }
}

/**
 * Builds a directory under a temporary name and renames it into place only when `fill` succeeds.
 * An existing target is replaced; on failure nothing is left behind and the old target stays.
 */
export async function writeDirAtomic(target: string, fill: (dir: string) => Promise<void>): Promise<void> {
  const tmp = tempPath(path.resolve(target));
  const parent = path.dirname(path.resolve(target));
  let created: string | undefined;
  try {
    created = await fs.mkdir(parent, { recursive: true });
    await fs.mkdir(tmp);
  } catch (e) {
    throw writeError(target, e);
  }
  try {
    await fill(tmp);
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true });
    await removeEmptyUpTo(parent, created);
    throw e;
  }
  await replaceDir(tmp, target);
}

/** Removes the folders from `dir` up to `top` (those a failed write created), stopping at one that is not empty. */
async function removeEmptyUpTo(dir: string, top: string | undefined): Promise<void> {
  if (top === undefined) return;
  for (let d = dir; d.startsWith(top); d = path.dirname(d)) {
    if (!(await fs.rmdir(d).then(() => true, () => false))) return;
    if (d === top) return;
  }
}

/**
 * Renames a complete directory `from` onto `target` (same filesystem), replacing an existing one;
 * if the rename fails, `from` is removed and the old target stays.
 */
export async function replaceDir(from: string, target: string): Promise<void> {
  const old = `${from}.old`;
  const hadOld = await fs.rename(target, old).then(() => true, () => false);
  try {
    await fs.mkdir(path.dirname(path.resolve(target)), { recursive: true });
    await fs.rename(from, target);
  } catch (e) {
    if (hadOld) await fs.rename(old, target);
    await fs.rm(from, { recursive: true, force: true });
    throw writeError(target, e);
  }
  if (hadOld) await fs.rm(old, { recursive: true, force: true });
}
