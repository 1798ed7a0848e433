import { promises as fs } from 'node:fs';
import { parse } from 'yaml';
import type { z } from 'zod';
import { clipped, fileSystemReason, UserError } from '@fisher-merge/core';
import { parseConfig } from './schema.ts';

/**
 * The largest config file read (1 MiB). A real config is a few KiB; parsing YAML costs tens of
 * times its size in memory (a 50 MB file took 2.2 GB), so a larger file is refused unread.
 */
export const MAX_CONFIG_BYTES = 1024 * 1024;

const readError = (file: string) => (e: NodeJS.ErrnoException): never => {
  throw new UserError(e.code === 'ENOENT' ? `config file not found: ${file}` : `cannot read config ${file}: ${fileSystemReason(e)}`);
};

/** Reads and parses a YAML file; a missing, oversized or unparsable file is one line naming the file. */
export async function readYaml(file: string): Promise<unknown> {
  const handle = await fs.open(file, 'r').catch(readError(file));
  let text: string;
  try {
    // The size of the open file, so a file swapped after the check is not read past the limit either.
    const { size } = await handle.stat().catch(readError(file));
    if (size > MAX_CONFIG_BYTES) throw new UserError(`${file}: config file is ${size} bytes, more than the ${MAX_CONFIG_BYTES} (1 MiB) a config may have`);
    const bytes = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    const { bytesRead } = await handle.read(bytes, 0, bytes.length, 0).catch(readError(file));
    if (bytesRead > MAX_CONFIG_BYTES) throw new UserError(`${file}: config file is more than the ${MAX_CONFIG_BYTES} bytes (1 MiB) a config may have`);
    text = bytes.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
  try {
    return parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid YAML: ${clipped((e as Error).message.split('\n')[0]!, 200)}`);
  }
}

/** Reads a YAML config and validates it against `schema`. */
export async function loadConfig<T extends z.ZodType>(schema: T, file: string): Promise<z.output<T>> {
  return parseConfig(schema, await readYaml(file), file);
}
