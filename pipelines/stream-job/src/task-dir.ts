import { promises as fs } from 'node:fs';
import path from 'node:path';
import { distinctUntilChanged, from, map, mergeMap, type Observable, pairwise, type SchedulerLike, startWith, takeWhile, timer } from 'rxjs';
import { fileSystemReason, isUserError, logEvent, UserError } from '@fisher-merge/core';
import { loadTaskFile, type StreamTask, type TasksDir } from './config.ts';
import { exhaustScanWithTrailing } from './operators.ts';

/** A task present in the job: one of `tasks:`, or read from a file of tasks_dir. */
export interface TaskEntry {
  task: StreamTask;
  /** The task file; absent for a task of `tasks:`. */
  file?: string;
  /** Changes whenever the file does: each revision is one tenure of the task (it is opened again). */
  revision: string;
}

/** The tasks present, by name. */
export type TaskSet = ReadonlyMap<string, TaskEntry>;

/** One name's change of the task set: a new revision joined, or (entry undefined) the task left. */
export interface TaskChange<E = TaskEntry> {
  name: string;
  entry: E | undefined;
}

/** A listed task file: its size, time and inode, and what it holds (nothing when it was refused). */
interface Listed {
  signature: string;
  entry?: TaskEntry;
}

type Listing = ReadonlyMap<string, Listed>;

export interface TaskDirectoryOptions {
  scheduler: SchedulerLike;
  /** Names the config's `tasks:` hold: a file naming one is refused. */
  reserved: ReadonlySet<string>;
  /** Drain mode: the directory is finished at the first listing after `drain` aborts, or once it has not changed for `idleMs`. */
  idle: { idleMs?: number; drain?: AbortSignal };
}

/**
 * The task set of a tasks_dir, every time it changes: the directory is listed every `pollMs` on the
 * job's scheduler, and each `*.yaml` file (hidden names skipped, so a writer may rename a finished
 * file into place) is read when its size, time or inode changed. A file that cannot be read as a
 * task entry, or that names a task another file or `tasks:` already has, is one logged line naming
 * it (`stream.task_file_refused`) and is ignored until it changes.
 */
export function taskDirectory(tasksDir: TasksDir, options: TaskDirectoryOptions): Observable<TaskSet> {
  const { scheduler, idle } = options;
  const seed = { listing: new Map() as Listing, changedAt: scheduler.now() };
  return timer(0, tasksDir.pollMs, scheduler).pipe(
    exhaustScanWithTrailing((s: typeof seed) => from(relist(tasksDir, s.listing, options.reserved)).pipe(
      map((listing) => ({ listing, changedAt: sameListing(listing, s.listing) ? s.changedAt : scheduler.now() })),
    ), seed),
    takeWhile((s) => !(idle.drain?.aborted || (idle.idleMs !== undefined && scheduler.now() - s.changedAt >= idle.idleMs)), true),
    map((s) => s.listing),
    distinctUntilChanged(sameListing),
    map(tasksOf),
  );
}

/** Per name, each change between consecutive task sets: a name whose revision is new joins, a name gone leaves. */
export function taskChanges<E extends { revision: string }>(sets: Observable<ReadonlyMap<string, E>>): Observable<TaskChange<E>> {
  return sets.pipe(
    startWith(new Map() as ReadonlyMap<string, E>),
    pairwise(),
    mergeMap(([before, now]) => [
      ...[...before.keys()].filter((name) => !now.has(name)).map((name): TaskChange<E> => ({ name, entry: undefined })),
      ...[...now].filter(([name, entry]) => before.get(name)?.revision !== entry.revision).map(([name, entry]): TaskChange<E> => ({ name, entry })),
    ]),
  );
}

/** The task files of a directory now, by task name (a refused file is logged, as by `taskDirectory`). */
export async function readTaskDirectory(tasksDir: TasksDir, reserved: ReadonlySet<string>): Promise<TaskSet> {
  return tasksOf(await relist(tasksDir, new Map(), reserved));
}

const tasksOf = (listing: Listing): TaskSet => new Map([...listing.values()].flatMap(({ entry }) => (entry ? [[entry.task.spec.name, entry] as const] : [])));

/** The tasks of `tasks:`, present for the whole run. */
export function configTasks(tasks: readonly StreamTask[]): TaskSet {
  return new Map(tasks.map((task) => [task.spec.name, { task, revision: 'config' }]));
}

const sameListing = (a: Listing, b: Listing): boolean => a.size === b.size && [...a].every(([file, l]) => b.get(file)?.signature === l.signature);

/** The directory's task files now: unchanged ones as they were, changed and new ones read (in name order, after the unchanged ones claimed their names). */
async function relist({ dir, gate }: TasksDir, known: Listing, reserved: ReadonlySet<string>): Promise<Listing> {
  // A tasks_dir not there yet holds no task; one that cannot be listed stops the job with one line.
  const names = await fs.readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [];
    throw new UserError(`tasks_dir ${dir}: cannot list it: ${fileSystemReason(e)}`);
  });
  const signatures = new Map<string, string>();
  for (const name of names.filter((n) => !n.startsWith('.') && n.endsWith('.yaml')).sort()) {
    const file = path.join(dir, name);
    const stat = await fs.stat(file).catch(() => undefined);
    if (stat?.isFile()) signatures.set(file, `${stat.size}:${stat.mtimeMs}:${stat.ino}`);
  }
  const listing = new Map<string, Listed>();
  const claimed = new Map<string, string>();
  for (const [file, signature] of signatures) {
    const before = known.get(file);
    if (before?.signature !== signature) continue;
    listing.set(file, before);
    if (before.entry) claimed.set(before.entry.task.spec.name, file);
  }
  for (const [file, signature] of signatures) {
    if (listing.has(file)) continue;
    const entry = await readTaskFile(file, signature, gate, reserved, claimed);
    if (entry) claimed.set(entry.task.spec.name, file);
    listing.set(file, { signature, ...(entry ? { entry } : {}) });
  }
  return new Map([...signatures.keys()].map((file) => [file, listing.get(file)!]));
}

async function readTaskFile(file: string, revision: string, gate: TasksDir['gate'], reserved: ReadonlySet<string>, claimed: ReadonlyMap<string, string>): Promise<TaskEntry | undefined> {
  try {
    const task = await loadTaskFile(file, gate);
    const name = task.spec.name;
    if (reserved.has(name)) throw new UserError(`${file}: task '${name}' is one of the config's tasks; give this file's task another 'name'`);
    const other = claimed.get(name);
    if (other !== undefined) throw new UserError(`${file}: task '${name}' is already defined by ${other}; give this file's task another 'name'`);
    return { task, file, revision };
  } catch (e) {
    if (!isUserError(e)) throw e;
    logEvent('stream.task_file_refused', { file, error: e.message, until: 'the file changes' });
    return undefined;
  }
}
