import { readFileSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { fileSystemReason, isFileSystemError, UserError } from './errors.ts';

/** Who holds a lock: the process id and, where the OS tells it (Linux /proc), the process's start time. */
interface Holder {
  pid: number;
  start: string | null;
  since: string;
}

/** The process's start time in clock ticks since boot and whether it is a zombie, from /proc/<pid>/stat (Linux). */
function procStat(pid: number): { start: string; zombie: boolean } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { start: fields[19]!, zombie: fields[0] === 'Z' || fields[0] === 'X' };
  } catch {
    return undefined;
  }
}

/** Alive and the same process: a pid reused by another process after a crash does not count. */
function isAlive(holder: Holder): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const stat = procStat(holder.pid);
  if (stat === undefined) return true; // alive, and no /proc to tell a reused pid apart
  return !stat.zombie && (holder.start === null || stat.start === holder.start);
}

function parseHolder(text: string): Holder | undefined {
  try {
    const h = JSON.parse(text) as Partial<Holder>;
    return Number.isSafeInteger(h.pid) ? { pid: h.pid!, start: typeof h.start === 'string' ? h.start : null, since: String(h.since) } : undefined;
  } catch {
    return undefined;
  }
}

export interface HeldLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Takes an exclusive lock file for the life of this process's job: created complete in one step
 * (a hard link of a written temporary file), naming the holder's pid and start time. A lock whose
 * holder has died (kill -9, a crash) is stale and taken over, so it never blocks a restart; a live
 * holder makes this a UserError naming its pid. `what` names the locked thing in that message.
 */
export async function acquireLock(file: string, what: string): Promise<HeldLock> {
  const dir = path.dirname(file);
  // A folder that cannot hold the lock (a file in its place, read-only, not ours) is one line naming it.
  const unusable = (e: unknown): unknown => {
    if (!(e instanceof Error) || typeof (e as NodeJS.ErrnoException).code !== 'string') return e;
    const at = isFileSystemError(e) && e.path !== file ? e.path : 'the lock';
    return new UserError(`${what}: cannot take its lock ${file}: ${at}: ${fileSystemReason(e)}; ${dir} must be a folder this job can write`);
  };
  const isFolder = await fs.stat(dir).then((s) => s.isDirectory(), () => undefined);
  if (isFolder === false) throw new UserError(`${what}: cannot take its lock ${file}: ${dir} is a file, expected a folder this job can write`);
  await fs.mkdir(dir, { recursive: true }).catch((e: unknown) => { throw unusable(e); });
  const mine = JSON.stringify({ pid: process.pid, start: procStat(process.pid)?.start ?? null, since: new Date().toISOString() } satisfies Holder);
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}`;
  await fs.writeFile(tmp, mine).catch((e: unknown) => { throw unusable(e); });
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await fs.link(tmp, file);
        return { file, release: () => releaseLock(file, mine) };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw unusable(e);
      }
      const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return undefined; // released meanwhile
        throw unusable(e);
      });
      if (text === undefined) continue;
      const holder = parseHolder(text);
      if (holder && isAlive(holder)) {
        throw new UserError(`${what} is in use by another job (pid ${holder.pid}, since ${holder.since}; lock ${file}); stop it or use another output`);
      }
      await removeStale(file, text, tmp);
    }
    throw new UserError(`${file}: could not take the lock (other jobs keep taking it)`);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/**
 * Removes `file` if it still holds the stale text `stale`. Of the jobs that found the same stale
 * lock, only the one that creates its takeover marker (named after that text) may remove it, and
 * it reads the lock again first: the lock cannot change under it, since nobody else removes that
 * text, so no job ever removes a lock another has just taken. A marker left by a job that died
 * while taking over is itself stale and removed the same way. The marker is a hard link of `mineFile`
 * (the file holding this job's holder text), so it appears complete: a marker read while being
 * written would look empty, hence stale, and be removed under its live taker.
 */
async function removeStale(file: string, stale: string, mineFile: string): Promise<void> {
  const marker = `${file}.takeover-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`;
  try {
    await fs.link(mineFile, marker);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const text = await fs.readFile(marker, 'utf8').catch(() => undefined);
    if (text === undefined) return; // that takeover just ended
    const holder = parseHolder(text);
    if (holder && isAlive(holder)) await delay(5); // another job is taking over: look again after it
    else await removeStale(marker, text, mineFile);
    return;
  }
  try {
    if ((await fs.readFile(file, 'utf8').catch(() => undefined)) === stale) await fs.rm(file, { force: true });
  } finally {
    await fs.rm(marker, { force: true });
  }
}

async function releaseLock(file: string, mine: string): Promise<void> {
  const text = await fs.readFile(file, 'utf8').catch(() => undefined);
  if (text === mine) await fs.rm(file, { force: true });
}
