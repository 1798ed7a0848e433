import path from 'node:path';
import { UserError, sha256Files, type Tensor } from '@fisher-merge/core';
import { FLOAT_DTYPES, openTensorSource, readHfConfig, type HfConfig, type TensorSource } from '@fisher-merge/checkpoint';
import { encoderConfigFromHf, familyForConfig, numLabelsFromConfig } from './config.ts';
import { LAYER_ROLES, type FamilyDescription, type HeadModule, type LayerRole } from './family.ts';
import type { EncoderConfig, EncoderWeights, HeadLayer, LayerWeights, Linear, Norm } from './types.ts';

/** Which optional parts a checkpoint has, and the legacy names its tensors use. */
export interface ModelLayout {
  /** The pooler is loaded, as head[0], and belongs to the encoder. */
  hasPooler: boolean;
  /** Number of task classifier layers in the head after the pooler (0: an encoder without a classifier). */
  classifierLayers: number;
  /** Canonical name (`.weight`/`.bias`) -> the name in the checkpoint, where a legacy `.gamma`/`.beta` is used. */
  legacyNames: Record<string, string>;
}

export interface LoadedModel {
  dir: string;
  family: FamilyDescription;
  config: EncoderConfig;
  weights: EncoderWeights;
  /** The raw config.json object. */
  hfConfig: HfConfig;
  /** '' for a bare encoder checkpoint (BertModel), 'bert.' etc. for a model with a task head. */
  encoderPrefix: string;
  /** sha256 of the weight files. */
  fingerprint: string;
  layout: ModelLayout;
}

/** What names and shapes a model's tensors have (no weights needed). */
export type ModelShape = Pick<LoadedModel, 'family' | 'config' | 'encoderPrefix' | 'layout'>;

export type EncoderRole = LayerRole | 'embeddings' | 'pooler';

export interface TensorRole {
  /** The full name in the checkpoint, prefix included. */
  name: string;
  role: EncoderRole;
  layer?: number;
  param: 'weight' | 'bias';
  shape: number[];
}

/** One parameter of the model: where it lives in EncoderWeights and in the checkpoint. */
interface ParamSlot {
  /** Canonical checkpoint name (legacy names resolved through ModelLayout.legacyNames). */
  name: string;
  role: EncoderRole | 'classifier';
  layer?: number;
  param: 'weight' | 'bias';
  shape: number[];
  /** LayerNorm parameters, which legacy checkpoints call gamma/beta. */
  norm: boolean;
  get(w: EncoderWeights): Float32Array | undefined;
}

function linearSlots(module: string, role: ParamSlot['role'], shape: [number, number], get: (w: EncoderWeights) => Linear | undefined, layer?: number): ParamSlot[] {
  return [
    { name: `${module}.weight`, role, layer, param: 'weight', shape, norm: false, get: (w) => get(w)?.weight },
    { name: `${module}.bias`, role, layer, param: 'bias', shape: [shape[0]], norm: false, get: (w) => get(w)?.bias },
  ];
}

function normSlots(module: string, role: ParamSlot['role'], size: number, get: (w: EncoderWeights) => Norm, layer?: number): ParamSlot[] {
  return [
    { name: `${module}.weight`, role, layer, param: 'weight', shape: [size], norm: true, get: (w) => get(w).weight },
    { name: `${module}.bias`, role, layer, param: 'bias', shape: [size], norm: true, get: (w) => get(w).bias },
  ];
}

function hasProjection(family: FamilyDescription, config: EncoderConfig): boolean {
  return family.embeddings.project !== undefined && config.embeddingSize !== config.hiddenSize;
}

function hasTokenTypeTable(family: FamilyDescription, config: EncoderConfig): boolean {
  return family.embeddings.tokenType !== undefined && config.typeVocabSize > 0;
}

/** Every parameter of a model, in checkpoint-independent order: embeddings, layers, pooler, classifier. */
function parameterSlots(family: FamilyDescription, config: EncoderConfig, prefix: string, layout: ModelLayout): ParamSlot[] {
  const { hiddenSize: H, intermediateSize: I, embeddingSize: E } = config;
  const emb = family.embeddings;
  const table = (module: string, rows: number, get: (w: EncoderWeights) => Float32Array | undefined): ParamSlot => ({
    name: `${prefix}${module}.weight`, role: 'embeddings', param: 'weight', shape: [rows, E], norm: false, get,
  });
  const slots: ParamSlot[] = [
    table(emb.word, config.vocabSize, (w) => w.embeddings.word),
    table(emb.position, config.maxPositions, (w) => w.embeddings.position),
  ];
  if (hasTokenTypeTable(family, config)) slots.push(table(emb.tokenType!, config.typeVocabSize, (w) => w.embeddings.tokenType));
  slots.push(...normSlots(`${prefix}${emb.norm}`, 'embeddings', E, (w) => w.embeddings.norm));
  if (hasProjection(family, config)) slots.push(...linearSlots(`${prefix}${emb.project!}`, 'embeddings', [H, E], (w) => w.embeddings.project));

  const shapes: Record<LayerRole, [number, number] | number> = {
    query: [H, H], key: [H, H], value: [H, H], attnOut: [H, H], attnNorm: H, ffnIn: [I, H], ffnOut: [H, I], ffnNorm: H,
  };
  for (let l = 0; l < config.numLayers; l++) {
    for (const role of LAYER_ROLES) {
      const module = `${prefix}${family.layer[role].replaceAll('{l}', String(l))}`;
      const shape = shapes[role];
      if (typeof shape === 'number') slots.push(...normSlots(module, role, shape, (w) => w.layers[l]![role] as Norm, l));
      else slots.push(...linearSlots(module, role, shape, (w) => w.layers[l]![role] as Linear, l));
    }
  }
  if (layout.hasPooler) slots.push(...linearSlots(`${prefix}${family.pooler!.module}`, 'pooler', [H, H], (w) => w.head[0]));
  const offset = layout.hasPooler ? 1 : 0;
  for (let i = 0; i < layout.classifierLayers; i++) {
    const out = i === layout.classifierLayers - 1 ? config.numLabels : H;
    slots.push(...linearSlots(family.classifier[i]!.module, 'classifier', [out, H], (w) => w.head[offset + i]));
  }
  return slots;
}

function checkpointName(layout: ModelLayout, canonical: string): string {
  return layout.legacyNames[canonical] ?? canonical;
}

function legacyName(canonical: string): string {
  return canonical.replace(/\.weight$/, '.gamma').replace(/\.bias$/, '.beta');
}

function missing(source: TensorSource, dir: string, name: string, family: FamilyDescription): UserError {
  const where = source.files.map((f) => path.basename(f)).join(', ');
  return new UserError(`${where}: missing tensor '${name}' (a ${family.name} checkpoint in ${dir})`);
}

/** Counted from the headers before anything is sized from config.json, so a huge num_hidden_layers is refused at once. */
function checkLayerCount(source: TensorSource, family: FamilyDescription, config: EncoderConfig, prefix: string, configLabel: string): void {
  const query = (l: number) => `${prefix}${family.layer.query.replaceAll('{l}', String(l))}.weight`;
  let present = 0;
  while (present < config.numLayers && source.has(query(present))) present++;
  if (present < config.numLayers) {
    const key = 'key' in family.config.numLayers ? `"${family.config.numLayers.key}"` : 'the layer count';
    throw new UserError(`${configLabel}: ${key} is ${config.numLayers} but ${source.files.map((f) => path.basename(f)).join(', ')} holds ${present} layers (no tensor '${query(present)}')`);
  }
}

/** A model folder described and validated without reading its tensor data: enough to plan a merge. */
export interface ModelInfo extends Omit<LoadedModel, 'weights'> {
  /** Reads tensors on demand, by their checkpoint names. */
  source: TensorSource;
}

/**
 * Reads config.json and the weight files' headers of any described family: finds the prefix, the
 * optional parts and legacy names, and checks every tensor's presence, dtype and shape.
 */
export async function describeModel(dir: string): Promise<ModelInfo> {
  const hfConfig = await readHfConfig(dir);
  const configLabel = path.join(dir, 'config.json');
  const family = familyForConfig(hfConfig, configLabel);
  const source = openTensorSource(dir);

  const wordModule = `${family.embeddings.word}.weight`;
  const encoderPrefix = family.encoderPrefixes.find((p) => source.has(`${p}${wordModule}`) || source.has(`${p}${legacyName(wordModule)}`));
  if (encoderPrefix === undefined) throw missing(source, dir, `${family.encoderPrefixes[0]}${wordModule}`, family);

  const hasClassifier = source.has(`${family.classifier[0]!.module}.weight`);
  const poolerInCheckpoint = family.pooler !== undefined && source.has(`${encoderPrefix}${family.pooler.module}.weight`);
  const wantsPooler = family.pooler !== undefined && hasClassifier && family.headUsesPooler;
  if (wantsPooler && !poolerInCheckpoint) throw missing(source, dir, `${encoderPrefix}${family.pooler!.module}.weight`, family);
  const layout: ModelLayout = {
    hasPooler: poolerInCheckpoint && (!hasClassifier || family.headUsesPooler),
    classifierLayers: hasClassifier ? family.classifier.length : 0,
    legacyNames: {},
  };
  const numLabels = hasClassifier ? numLabelsFromConfig(hfConfig, configLabel) : 0;
  const config = encoderConfigFromHf(family, hfConfig, numLabels, configLabel);
  checkLayerCount(source, family, config, encoderPrefix, configLabel);

  for (const slot of parameterSlots(family, config, encoderPrefix, layout)) {
    let name = slot.name;
    if (!source.has(name) && slot.norm && source.has(legacyName(name))) {
      name = legacyName(name);
      layout.legacyNames[slot.name] = name;
    }
    if (!source.has(name)) throw missing(source, dir, name, family);
    const info = source.info(name);
    const file = source.fileOf(name);
    if (!FLOAT_DTYPES.includes(info.dtype)) {
      throw new UserError(`${file}: tensor '${name}' has dtype ${info.dtype}, expected a floating-point dtype (${FLOAT_DTYPES.join(', ')})`);
    }
    if (info.shape.length !== slot.shape.length || info.shape.some((d, i) => d !== slot.shape[i])) {
      throw new UserError(`${file}: tensor '${name}' has shape [${info.shape.join(',')}], expected [${slot.shape.join(',')}] from ${configLabel}`);
    }
  }
  return { dir, family, config, hfConfig, encoderPrefix, layout, source, fingerprint: await sha256Files(source.files) };
}

/** Loads a Hugging Face model folder (config.json + weights) of any described family into canonical weights. */
export async function loadEncoder(dir: string): Promise<LoadedModel> {
  const { source, ...info } = await describeModel(dir);
  const values = new Map<string, Float32Array>();
  for (const slot of parameterSlots(info.family, info.config, info.encoderPrefix, info.layout)) {
    values.set(slot.name, source.float32(checkpointName(info.layout, slot.name)));
  }
  return { ...info, weights: assembleWeights(info.family, info.config, info.encoderPrefix, info.layout, values) };
}

function assembleWeights(family: FamilyDescription, config: EncoderConfig, prefix: string, layout: ModelLayout, values: Map<string, Float32Array>): EncoderWeights {
  const get = (name: string): Float32Array => values.get(name)!;
  const linear = (module: string, outFeatures: number, inFeatures: number): Linear => ({
    weight: get(`${module}.weight`), bias: get(`${module}.bias`), outFeatures, inFeatures,
  });
  const norm = (module: string): Norm => ({ weight: get(`${module}.weight`), bias: get(`${module}.bias`) });
  const { hiddenSize: H, intermediateSize: I, embeddingSize: E } = config;
  const emb = family.embeddings;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const m = (role: LayerRole) => `${prefix}${family.layer[role].replaceAll('{l}', String(l))}`;
    layers.push({
      query: linear(m('query'), H, H),
      key: linear(m('key'), H, H),
      value: linear(m('value'), H, H),
      attnOut: linear(m('attnOut'), H, H),
      attnNorm: norm(m('attnNorm')),
      ffnIn: linear(m('ffnIn'), I, H),
      ffnOut: linear(m('ffnOut'), H, I),
      ffnNorm: norm(m('ffnNorm')),
    });
  }
  const head: HeadLayer[] = [];
  const headLayer = (module: string, spec: HeadModule, out: number): HeadLayer => ({ ...linear(module, out, H), activation: spec.activation });
  if (layout.hasPooler) head.push(headLayer(`${prefix}${family.pooler!.module}`, family.pooler!, H));
  for (let i = 0; i < layout.classifierLayers; i++) {
    const spec = family.classifier[i]!;
    head.push(headLayer(spec.module, spec, i === layout.classifierLayers - 1 ? config.numLabels : H));
  }
  return {
    config,
    embeddings: {
      word: get(`${prefix}${emb.word}.weight`),
      position: get(`${prefix}${emb.position}.weight`),
      tokenType: hasTokenTypeTable(family, config) ? get(`${prefix}${emb.tokenType!}.weight`) : undefined,
      norm: norm(`${prefix}${emb.norm}`),
      project: hasProjection(family, config) ? linear(`${prefix}${emb.project!}`, H, E) : undefined,
    },
    layers,
    head,
  };
}

/** Every encoder tensor (embeddings, layers, pooler when loaded; no classifier) with its role, named as in the checkpoint. */
export function encoderTensorRoles(model: ModelShape): TensorRole[] {
  return parameterSlots(model.family, model.config, model.encoderPrefix, model.layout)
    .filter((s) => s.role !== 'classifier')
    .map((s) => {
      const role: TensorRole = { name: checkpointName(model.layout, s.name), role: s.role as EncoderRole, param: s.param, shape: [...s.shape] };
      if (s.layer !== undefined) role.layer = s.layer;
      return role;
    });
}

/** The task classifier's tensor names (empty for a bare encoder). */
export function headTensorNames(model: ModelShape): string[] {
  return parameterSlots(model.family, model.config, model.encoderPrefix, model.layout)
    .filter((s) => s.role === 'classifier')
    .map((s) => checkpointName(model.layout, s.name));
}

/**
 * The inverse of loading: weights (of this model's shape) as F32 tensors under the checkpoint's names.
 * Used to write merged models and to name per-parameter arrays (full Fisher) the same way.
 */
export function toHfTensors(model: LoadedModel, weights: EncoderWeights): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const slot of parameterSlots(model.family, model.config, model.encoderPrefix, model.layout)) {
    const name = checkpointName(model.layout, slot.name);
    const data = slot.get(weights);
    const expected = slot.shape.reduce((a, b) => a * b, 1);
    if (!data || data.length !== expected) {
      throw new Error(`toHfTensors: '${name}' needs ${expected} values [${slot.shape.join(',')}], weights hold ${data?.length ?? 'none'}`);
    }
    out[name] = { dtype: 'F32', shape: [...slot.shape], data };
  }
  return out;
}
