import { existsSync } from 'node:fs';
import { UserError, type Tensor } from '@fisher-merge/core';
import { readSafetensors, writeSafetensors } from '@fisher-merge/checkpoint';
import type { FisherMode, MaskFisher } from './mask-fisher.ts';

/** `fisher_merge` metadata values telling the two kinds of Fisher file apart. */
export const MASK_FISHER_FORMAT = 'mask-fisher/1';
export const FULL_FISHER_FORMAT = 'full-fisher/1';

/** Writes mask-node statistics: `head_fisher` [L,H] and `neuron_fisher` [L,I] (F32) plus counts and fingerprints. */
export async function writeMaskFisher(file: string, stats: MaskFisher): Promise<void> {
  const tensors: Record<string, Tensor> = {
    head_fisher: { dtype: 'F32', shape: [stats.numLayers, stats.numHeads], data: Float32Array.from(stats.head) },
    neuron_fisher: { dtype: 'F32', shape: [stats.numLayers, stats.intermediateSize], data: Float32Array.from(stats.neuron) },
  };
  await writeSafetensors(file, tensors, {
    format: 'pt',
    fisher_merge: MASK_FISHER_FORMAT,
    mode: stats.mode,
    batch_size: String(stats.batchSize),
    examples: String(stats.examples),
    batches: String(stats.batches),
    task: stats.task,
    model_fingerprint: stats.modelFingerprint,
    data_fingerprint: stats.dataFingerprint,
  });
}

export async function readMaskFisher(file: string): Promise<MaskFisher> {
  const st = openFisherFile(file);
  const kind = st.metadata.fisher_merge;
  if (kind !== MASK_FISHER_FORMAT) {
    throw new UserError(`${file}: not a mask Fisher file (metadata fisher_merge is ${JSON.stringify(kind)}, expected "${MASK_FISHER_FORMAT}")${kind === FULL_FISHER_FORMAT ? '; it holds a full Fisher: use --method full-fisher' : ''}`);
  }
  for (const name of ['head_fisher', 'neuron_fisher']) {
    if (!st.has(name)) throw new UserError(`${file}: missing tensor '${name}'`);
    if (st.info(name).shape.length !== 2) throw new UserError(`${file}: tensor '${name}' must have shape [layers, n], got [${st.info(name).shape.join(',')}]`);
  }
  const [L, H] = st.info('head_fisher').shape as [number, number];
  const [L2, I] = st.info('neuron_fisher').shape as [number, number];
  if (L !== L2) throw new UserError(`${file}: head_fisher has ${L} layers but neuron_fisher has ${L2}`);
  const mode = st.metadata.mode;
  if (mode !== 'batch' && mode !== 'example') throw new UserError(`${file}: metadata mode must be "batch" or "example", got ${JSON.stringify(mode)}`);
  return {
    mode: mode as FisherMode,
    batchSize: metadataNumber(file, st.metadata, 'batch_size'),
    numLayers: L,
    numHeads: H,
    intermediateSize: I,
    head: st.float64('head_fisher'),
    neuron: st.float64('neuron_fisher'),
    examples: metadataNumber(file, st.metadata, 'examples'),
    batches: metadataNumber(file, st.metadata, 'batches'),
    task: st.metadata.task ?? '',
    modelFingerprint: st.metadata.model_fingerprint ?? '',
    dataFingerprint: st.metadata.data_fingerprint ?? '',
  };
}

/** Full diagonal Fisher: one F32 tensor per model parameter, named as in the model's checkpoint. */
export interface FullFisher {
  mode: 'empirical' | 'expected';
  examples: number;
  task: string;
  modelFingerprint: string;
  dataFingerprint: string;
  tensors: Record<string, Tensor>;
}

export async function writeFullFisher(file: string, fisher: FullFisher): Promise<void> {
  await writeSafetensors(file, fisher.tensors, {
    format: 'pt',
    fisher_merge: FULL_FISHER_FORMAT,
    mode: fisher.mode,
    examples: String(fisher.examples),
    task: fisher.task,
    model_fingerprint: fisher.modelFingerprint,
    data_fingerprint: fisher.dataFingerprint,
  });
}

/** Opens a full Fisher file; tensors are read on demand by name. */
export function readFullFisher(file: string): { meta: Omit<FullFisher, 'tensors'>; tensor: (name: string) => Float32Array } {
  const st = openFisherFile(file);
  const kind = st.metadata.fisher_merge;
  if (kind !== FULL_FISHER_FORMAT) {
    throw new UserError(`${file}: not a full Fisher file (metadata fisher_merge is ${JSON.stringify(kind)}, expected "${FULL_FISHER_FORMAT}")${kind === MASK_FISHER_FORMAT ? '; it holds a mask Fisher: use --method mask-fisher' : ''}`);
  }
  const mode = st.metadata.mode === 'expected' ? 'expected' : 'empirical';
  return {
    meta: {
      mode,
      examples: metadataNumber(file, st.metadata, 'examples'),
      task: st.metadata.task ?? '',
      modelFingerprint: st.metadata.model_fingerprint ?? '',
      dataFingerprint: st.metadata.data_fingerprint ?? '',
    },
    tensor: (name) => {
      if (!st.has(name)) throw new UserError(`${file}: missing tensor '${name}' (a Fisher file of another architecture?)`);
      return st.float32(name);
    },
  };
}

function openFisherFile(file: string) {
  if (!existsSync(file)) throw new UserError(`Fisher file not found: ${file}`);
  return readSafetensors(file);
}

function metadataNumber(file: string, metadata: Record<string, string>, key: string): number {
  const value = Number(metadata[key]);
  if (metadata[key] === undefined || !Number.isFinite(value) || value < 0) {
    throw new UserError(`${file}: metadata '${key}' must be a non-negative number, got ${JSON.stringify(metadata[key])}`);
  }
  return value;
}
