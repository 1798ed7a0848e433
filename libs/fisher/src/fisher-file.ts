import { existsSync } from 'node:fs';
import { shown, UserError, type Tensor } from '@fisher-merge/core';
import { readSafetensors, writeSafetensors } from '@fisher-merge/checkpoint';
import type { MaskFisher } from './mask-fisher.ts';
import { checkExampleCounts, checkStatisticShape, checkStatisticValues } from './statistic-check.ts';

/** F32 copies of a statistic's sums, checked as they will be stored (a finite float64 sum can overflow float32). */
function storedSums(file: string, tensors: Record<string, Tensor>): Record<string, Tensor> {
  for (const [name, t] of Object.entries(tensors)) checkStatisticValues({ file, tensor: name, shape: t.shape }, t.data as Float32Array, { sumOfSquares: true });
  return tensors;
}

/** `fisher_merge` metadata values telling the two kinds of Fisher file apart. */
export const MASK_FISHER_FORMAT = 'mask-fisher/1';
export const FULL_FISHER_FORMAT = 'full-fisher/1';

/** Writes mask-node statistics: `head_fisher` [L,H] and `neuron_fisher` [L,I] (F32) plus counts and fingerprints. */
export async function writeMaskFisher(file: string, stats: MaskFisher): Promise<void> {
  const tensors = storedSums(file, {
    head_fisher: { dtype: 'F32', shape: [stats.numLayers, stats.numHeads], data: Float32Array.from(stats.head) },
    neuron_fisher: { dtype: 'F32', shape: [stats.numLayers, stats.intermediateSize], data: Float32Array.from(stats.neuron) },
  });
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
    throw new UserError(`${file}: not a mask Fisher file (metadata fisher_merge is ${shown(kind)}, expected "${MASK_FISHER_FORMAT}")${kind === FULL_FISHER_FORMAT ? '; it holds a full Fisher: use --method full-fisher' : ''}`);
  }
  for (const name of ['head_fisher', 'neuron_fisher']) {
    if (!st.has(name)) throw new UserError(`${file}: missing tensor '${name}'`);
    if (st.info(name).shape.length !== 2) throw new UserError(`${file}: tensor '${name}' must have shape [layers, n], got [${st.info(name).shape.join(',')}]`);
  }
  const [L, H] = st.info('head_fisher').shape as [number, number];
  const [L2, I] = st.info('neuron_fisher').shape as [number, number];
  if (L !== L2) throw new UserError(`${file}: head_fisher has ${L} layers but neuron_fisher has ${L2}`);
  checkStatisticShape(file, { numLayers: L, numHeads: H, intermediateSize: I });
  const mode = st.metadata.mode;
  if (mode !== 'batch' && mode !== 'example') throw new UserError(`${file}: metadata mode must be "batch" or "example", got ${shown(mode)}`);
  const counts = { mode, batchSize: metadataNumber(file, st.metadata, 'batch_size'), examples: metadataNumber(file, st.metadata, 'examples'), batches: metadataNumber(file, st.metadata, 'batches') };
  checkExampleCounts(file, counts);
  const sums = (name: string): Float64Array => {
    const values = st.float64(name);
    checkStatisticValues({ file, tensor: name, shape: st.info(name).shape }, values, { sumOfSquares: true });
    return values;
  };
  return {
    ...counts,
    mode,
    numLayers: L,
    numHeads: H,
    intermediateSize: I,
    head: sums('head_fisher'),
    neuron: sums('neuron_fisher'),
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
  await writeSafetensors(file, storedSums(file, fisher.tensors), {
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
    throw new UserError(`${file}: not a full Fisher file (metadata fisher_merge is ${shown(kind)}, expected "${FULL_FISHER_FORMAT}")${kind === MASK_FISHER_FORMAT ? '; it holds a mask Fisher: use --method mask-fisher' : ''}`);
  }
  const mode = st.metadata.mode === 'expected' ? 'expected' : 'empirical';
  const examples = metadataNumber(file, st.metadata, 'examples');
  checkExampleCounts(file, { examples });
  return {
    meta: {
      mode,
      examples,
      task: st.metadata.task ?? '',
      modelFingerprint: st.metadata.model_fingerprint ?? '',
      dataFingerprint: st.metadata.data_fingerprint ?? '',
    },
    tensor: (name) => {
      if (!st.has(name)) throw new UserError(`${file}: missing tensor '${name}' (a Fisher file of another architecture?)`);
      const values = st.float32(name);
      checkStatisticValues({ file, tensor: name, shape: st.info(name).shape }, values, { sumOfSquares: true });
      return values;
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
    throw new UserError(`${file}: metadata '${key}' must be a non-negative number, got ${shown(metadata[key])}`);
  }
  return value;
}
