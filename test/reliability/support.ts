import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { errorLine, tempDir } from '../support.ts';

export const REPO = path.resolve(import.meta.dirname, '../..');
export const modelDir = (task: string): string => path.join(REPO, 'data/models', task);
export const glueFile = (task: string, split: 'train' | 'validation' = 'validation'): string => path.join(REPO, 'data/glue', task, `${split}-00000-of-00001.parquet`);

type Json = Record<string, unknown>;

export interface ModelEdits {
  config?: (config: Json) => Json | void;
  tokenizer?: (tokenizer: Json) => Json | void;
  /** Replaces model.safetensors (bytes written as given). */
  weights?: Uint8Array[] | Uint8Array;
}

/** A copy of a model folder with some files edited; the others are symbolic links to the originals. */
export function editedModel(from: string, edits: ModelEdits, into = tempDir('fisher-merge-model-')): string {
  const dir = path.join(into, path.basename(from));
  mkdirSync(dir, { recursive: true });
  for (const name of readdirSync(from)) {
    const file = path.join(from, name);
    const edit = name === 'config.json' ? edits.config : name === 'tokenizer.json' ? edits.tokenizer : undefined;
    if (edit) {
      const json = JSON.parse(readFileSync(file, 'utf8')) as Json;
      writeFileSync(path.join(dir, name), JSON.stringify(edit(json) ?? json));
    } else if (name === 'model.safetensors' && edits.weights) {
      writeFileSync(path.join(dir, name), Buffer.concat(([] as Uint8Array[]).concat(edits.weights)));
    } else symlinkSync(file, path.join(dir, name));
  }
  return dir;
}


export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function cli(args: readonly string[], options: { input?: string | Uint8Array; env?: NodeJS.ProcessEnv } = {}): CliRun {
  const run = spawnSync(process.execPath, [path.join(REPO, 'bin/fisher-merge.mjs'), ...args], {
    encoding: 'utf8',
    cwd: REPO,
    ...(options.input !== undefined ? { input: options.input } : {}),
    ...(options.env !== undefined ? { env: options.env } : {}),
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** Exit 1 with exactly one error line (no stack trace) matching `pattern`, and no stdout unless allowed. */
export function expectRefused(run: CliRun, pattern: RegExp): void {
  const message = errorLine(run.stderr);
  expect(message).not.toMatch(/internal error/);
  expect(message).toMatch(pattern);
  expect(run.status, run.stderr).toBe(1);
}
