import { readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { UserError } from './errors.ts';

/** An input a command reads, as named in messages (a flag or config key) with its path. */
export interface NamedPath {
  what: string;
  path: string;
}

/** The path with every existing part resolved through symbolic links (the rest kept as given). */
function resolved(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    const parent = path.dirname(p);
    return parent === p ? p : path.join(resolved(parent), path.basename(p));
  }
}

/**
 * Both places a path can stand for: its directory resolved with the name kept (where a rename
 * writes: onto a symbolic link itself) and the fully resolved target (what a reader reads).
 */
function locations(p: string): string[] {
  const absolute = path.resolve(p);
  const parent = path.dirname(absolute);
  return [...new Set([parent === absolute ? absolute : path.join(resolved(parent), path.basename(absolute)), resolved(absolute)])];
}

const within = (inner: string, outer: string): boolean => inner.startsWith(outer.endsWith(path.sep) ? outer : outer + path.sep);

/**
 * A UserError when an output would land on an input: it is one, contains one (replacing the output
 * would delete it) or lies inside one (writing it would change the input).
 */
export function refuseOutputOnInputs(output: NamedPath, inputs: readonly NamedPath[]): void {
  const outs = locations(output.path);
  for (const input of inputs) {
    for (const at of locations(input.path)) {
      for (const out of outs) {
        const how = out === at ? 'is' : within(at, out) ? 'contains' : within(out, at) ? 'lies inside' : undefined;
        if (how) throw new UserError(`${output.what} ${output.path} ${how} the input ${input.what} ${input.path}; write the output elsewhere`);
      }
    }
  }
}

export interface ExistingOutputPolicy {
  /** What the output is: a folder (replaced whole) or a file. */
  kind: 'folder' | 'file';
  /** The user said to replace what is there (`--overwrite`, `overwrite: true`). */
  overwrite: boolean;
  /** How the user says so, for the message: `--overwrite` or `overwrite: true`. */
  how: string;
}

/**
 * A UserError when an output would destroy what is already there: an existing file, or a folder
 * holding anything, is refused unless the user asked to overwrite it (the writer then replaces it
 * only once the new output is complete); an empty folder is taken. A folder output onto a file, or
 * a file output onto a folder, is refused even then: that is a wrong path, not an old output.
 */
export function refuseExistingOutput(output: NamedPath, policy: ExistingOutputPolicy): void {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(output.path).isDirectory();
  } catch {
    return; // nothing there (or nothing readable: the write itself reports that)
  }
  if (isDirectory !== (policy.kind === 'folder')) {
    throw new UserError(`${output.what} ${output.path} is ${isDirectory ? 'a folder, expected a file' : 'a file, expected a folder'}; write the output elsewhere`);
  }
  if (policy.overwrite || (isDirectory && readdirSync(output.path).length === 0)) return;
  throw new UserError(`${output.what} ${output.path} already exists${isDirectory ? ' and is not empty' : ''}; give ${policy.how} to replace it, or write the output elsewhere`);
}
