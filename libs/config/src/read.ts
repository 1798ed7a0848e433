import { promises as fs } from 'node:fs';
import { parse } from 'yaml';
import type { z } from 'zod';
import { UserError } from '@fisher-merge/core';
import { parseConfig } from './schema.ts';

/** Reads and parses a YAML file; a missing file or bad YAML is one line naming the file. */
export async function readYaml(file: string): Promise<unknown> {
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new UserError(e.code === 'ENOENT' ? `config file not found: ${file}` : `cannot read config ${file}: ${e.message}`);
  });
  try {
    return parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** Reads a YAML config and validates it against `schema`. */
export async function loadConfig<T extends z.ZodType>(schema: T, file: string): Promise<z.output<T>> {
  return parseConfig(schema, await readYaml(file), file);
}
