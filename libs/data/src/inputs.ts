import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '@fisher-merge/core';

/**
 * Expands input specs into a sorted, de-duplicated file list: a file is itself; a directory gives
 * every file under it (recursively) ending in `extension`; a pattern with `*`, `?` or `**` matches
 * paths (`*` and `?` stay within one path segment; a `**` segment spans any number of directories).
 * Each spec must produce at least one file.
 */
export async function resolveInputFiles(specs: string | readonly string[], extension: string): Promise<string[]> {
  const files: string[] = [];
  for (const spec of typeof specs === 'string' ? [specs] : specs) {
    const found = isPattern(spec) ? await matchPattern(spec) : await fileOrDirectory(spec, extension);
    if (found.length === 0) {
      throw new UserError(isPattern(spec) ? `no files match ${spec}` : `no ${extension} files in directory ${spec}`);
    }
    files.push(...found);
  }
  return [...new Set(files)];
}

function isPattern(spec: string): boolean {
  return /[*?]/.test(spec);
}

async function fileOrDirectory(spec: string, extension: string): Promise<string[]> {
  const stat = await fs.stat(spec).catch(() => undefined);
  if (!stat) throw new UserError(`file not found: ${spec}`);
  if (!stat.isDirectory()) return [spec];
  return (await walk(spec)).filter((f) => f.endsWith(extension)).sort();
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full)));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

/** Expands a pattern one path segment at a time, so only directories the pattern can reach are listed. */
async function matchPattern(pattern: string): Promise<string[]> {
  const absolute = pattern.startsWith('/');
  const segments = pattern.split('/').filter((s) => s !== '' && s !== '.');
  return (await expand(absolute ? '/' : '', segments)).sort();
}

async function expand(dir: string, segments: string[]): Promise<string[]> {
  const [segment, ...rest] = segments;
  if (segment === undefined) {
    const stat = await fs.stat(dir).catch(() => undefined);
    return stat?.isFile() ? [dir] : [];
  }
  if (!isPattern(segment)) return expand(path.join(dir, segment), rest);
  const entries = await fs.readdir(dir || '.', { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  if (segment === '**') {
    out.push(...(await expand(dir, rest)));
    for (const entry of entries) if (entry.isDirectory()) out.push(...(await expand(path.join(dir, entry.name), segments)));
    return out;
  }
  const regex = segmentRegExp(segment);
  for (const entry of entries) if (regex.test(entry.name)) out.push(...(await expand(path.join(dir, entry.name), rest)));
  return out;
}

/** `*` = any run of characters, `?` = one character, within a single path segment. */
function segmentRegExp(segment: string): RegExp {
  const source = [...segment].map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('');
  return new RegExp(`^${source}$`);
}
