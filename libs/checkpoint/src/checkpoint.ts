import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { shown, type Tensor, UserError, writeDirAtomic } from '@fisher-merge/core';
import { toFloat32 } from './dtype.ts';
import { readSafetensors, writeSafetensors, type TensorInfo } from './safetensors.ts';
import { readPytorchBin } from './pytorch.ts';

/** Read access to a checkpoint's tensors, whatever the files: tensors are read only when asked for. */
export interface TensorSource {
  /** The weight files, in a stable order (for fingerprints). */
  readonly files: readonly string[];
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  tensor(name: string): Tensor;
  float32(name: string): Float32Array;
  /** The file (base name) holding a tensor, for messages. */
  fileOf(name: string): string;
}

/** The subset of SafetensorsFile a single-file source needs; the pickle reader implements it too. */
export interface TensorFile {
  readonly label: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  tensor(name: string): Tensor;
}

let allowNonfinite = false;

/**
 * Weights with NaN or Inf are refused when read (`float32`), naming the tensor; `allow` keeps them
 * for debugging (the CLI's --allow-nonfinite). A process-wide choice, as the flag is.
 */
export function allowNonfiniteWeights(allow: boolean): void {
  allowNonfinite = allow;
}

/** Whether NaN and Inf are let through (--allow-nonfinite): statistics follow the same choice as weights. */
export const nonfiniteAllowed = (): boolean => allowNonfinite;

/** Index of the first NaN or infinite value, or -1. */
export function firstNonfinite(values: ArrayLike<number>): number {
  // v * 0 is NaN exactly when v is NaN or infinite, so one sum tells whether to search at all.
  let probe = 0;
  for (let i = 0; i < values.length; i++) probe += values[i]! * 0;
  if (probe === 0) return -1;
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

/** A tensor's values as float32, refused when one is NaN or infinite (unless allowed). */
function finiteFloat32(reader: TensorFile, name: string): Float32Array {
  const t = reader.tensor(name);
  const values = toFloat32(t.dtype, t.data);
  const bad = allowNonfinite ? -1 : firstNonfinite(values);
  if (bad >= 0) {
    throw new UserError(`${reader.label}: tensor '${name}' holds ${values[bad]} at element ${bad}; weights must be finite (--allow-nonfinite to load it anyway)`);
  }
  return values;
}

function singleFileSource(file: string, reader: TensorFile): TensorSource {
  return {
    files: [file],
    names: () => reader.names(),
    has: (name) => reader.has(name),
    info: (name) => reader.info(name),
    tensor: (name) => reader.tensor(name),
    float32: (name) => finiteFloat32(reader, name),
    fileOf: () => reader.label,
  };
}

/** Sharded checkpoints: an index maps each tensor to its shard; shards are opened on first use. */
function shardedSource(dir: string, indexFile: string, open: (file: string) => TensorFile): TensorSource {
  const label = indexFile;
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(indexFile, 'utf8'));
  } catch (e) {
    throw new UserError(`${label}: not valid JSON (${(e as Error).message})`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new UserError(`${label}: missing "weight_map" object`);
  }
  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || shard === '..' || shard === '.') {
      throw new UserError(`${label}: tensor '${name}' maps to an invalid shard file name ${shown(shard)}`);
    }
    shardOf.set(name, shard);
  }
  const shards = [...new Set(shardOf.values())].sort();
  for (const shard of shards) {
    if (!existsSync(path.join(dir, shard))) throw new UserError(`${label}: shard file '${shard}' does not exist in ${dir}`);
  }
  const opened = new Map<string, TensorFile>();
  const readerFor = (name: string): TensorFile => {
    const shard = shardOf.get(name);
    if (shard === undefined) throw new UserError(`${label}: no tensor named '${name}'`);
    let reader = opened.get(shard);
    if (!reader) {
      reader = open(path.join(dir, shard));
      opened.set(shard, reader);
    }
    if (!reader.has(name)) throw new UserError(`${reader.label}: tensor '${name}' is listed in ${label} but missing from the shard`);
    return reader;
  };
  return {
    files: shards.map((s) => path.join(dir, s)),
    names: () => [...shardOf.keys()],
    has: (name) => shardOf.has(name),
    info: (name) => readerFor(name).info(name),
    tensor: (name) => readerFor(name).tensor(name),
    float32: (name) => finiteFloat32(readerFor(name), name),
    fileOf: (name) => (shardOf.has(name) ? path.join(dir, shardOf.get(name)!) : label),
  };
}

const WEIGHT_FILES = ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json'] as const;

/** Opens the weights of a Hugging Face model folder: safetensors first, then pytorch_model.bin, sharded or not. */
export function openTensorSource(dir: string): TensorSource {
  const at = (f: string) => path.join(dir, f);
  if (existsSync(at('model.safetensors'))) return singleFileSource(at('model.safetensors'), readSafetensors(at('model.safetensors')));
  if (existsSync(at('model.safetensors.index.json'))) return shardedSource(dir, at('model.safetensors.index.json'), readSafetensors);
  if (existsSync(at('pytorch_model.bin'))) return singleFileSource(at('pytorch_model.bin'), readPytorchBin(at('pytorch_model.bin')));
  if (existsSync(at('pytorch_model.bin.index.json'))) return shardedSource(dir, at('pytorch_model.bin.index.json'), readPytorchBin);
  throw new UserError(`${dir}: no weights found (expected one of ${WEIGHT_FILES.join(', ')})`);
}

export type HfConfig = Record<string, unknown>;

/** Reads config.json of a model folder. */
export async function readHfConfig(dir: string): Promise<HfConfig> {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new UserError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new UserError(`${file}: expected a JSON object`);
  return json as HfConfig;
}

/** Tokenizer files a Hugging Face model folder may carry; copied along when saving a checkpoint. */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'merges.txt', 'vocab.json'] as const;

export interface HfFolderFiles {
  hfConfig: HfConfig;
  /** A model folder whose tokenizer files are copied (those present). */
  copyFilesFrom?: string;
}

/** Writes a model folder's files other than its weights: config.json and the tokenizer files. */
export async function writeHfFolderFiles(dir: string, options: HfFolderFiles): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), `${JSON.stringify(options.hfConfig, null, 2)}\n`);
  if (options.copyFilesFrom !== undefined) {
    for (const name of TOKENIZER_FILES) {
      const from = path.join(options.copyFilesFrom, name);
      if (existsSync(from)) await fs.copyFile(from, path.join(dir, name));
    }
  }
}

export interface SaveCheckpointOptions extends HfFolderFiles {
  tensors: Record<string, Tensor>;
}

/** Writes a Hugging Face model folder (config.json, model.safetensors, tokenizer files); it appears complete or not at all. */
export async function saveCheckpoint(dir: string, options: SaveCheckpointOptions): Promise<void> {
  await writeDirAtomic(dir, async (tmp) => {
    await writeHfFolderFiles(tmp, options);
    await writeSafetensors(path.join(tmp, 'model.safetensors'), options.tensors, { format: 'pt' });
  });
}
