import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { mergeModels, type MergeJobOptions } from '@fisher-merge/merge-writer';

/** The fixture models (data/models) as merge tests read them. */
export const root = path.resolve(import.meta.dirname, '../..');
export const modelDir = (task: string) => path.join(root, 'data/models', task);
export const baseDir = modelDir('base');

export type Weights = Map<string, Float32Array>;

/** The encoder tensors of a checkpoint, by their names without the `bert.` prefix. */
export function encoder(file: string): Weights {
  const st = readSafetensors(file);
  return new Map(st.names().filter((n) => !n.startsWith('classifier.')).map((n) => [n.replace(/^bert\./, ''), st.float32(n)]));
}

/** Each encoder tensor's shape, from the base model. */
export function encoderShapes(): Map<string, number[]> {
  const st = readSafetensors(path.join(baseDir, 'model.safetensors'));
  return new Map(st.names().filter((n) => !n.startsWith('classifier.')).map((n) => [n.replace(/^bert\./, ''), st.info(n).shape]));
}

export interface Provenance {
  params: unknown;
  models: { params: unknown }[];
}

/** A merge through mergeModels into `out`: its merged encoder weights and its merge.json. */
export async function mergedEncoder(out: string, opts: Omit<MergeJobOptions, 'out'>): Promise<Weights & { provenance: Provenance }> {
  await mergeModels({ ...opts, out });
  const merged = Object.assign(encoder(path.join(out, 'encoder', 'model.safetensors')), { provenance: JSON.parse(readFileSync(path.join(out, 'merge.json'), 'utf8')) as Provenance });
  // A merge writes whole model folders; keep only what is checked, so the file's disk use stays small.
  rmSync(out, { recursive: true });
  return merged;
}
