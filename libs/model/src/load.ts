import path from 'node:path';
import { UserError, sha256Files, type Tensor } from '@fisher-merge/core';
import { FLOAT_DTYPES, openTensorSource, readHfConfig, type HfConfig, type TensorSource } from '@fisher-merge/checkpoint';
import { encoderConfigFromHf, numLabelsFromConfig } from './config.ts';
import type { FamilyDescription } from './family.ts';
import { layerModule, paramNames } from './names.ts';
import { chooseFamily } from './registry.ts';
import { buildWeights, readParam, schemaParams, type LayerRole, type SchemaParam, type WeightsLayout } from './schema.ts';
import type { Activation, EncoderConfig, EncoderWeights } from './types.ts';

/** Which optional parts a checkpoint has, and the legacy names its tensors use. */
export interface ModelLayout {
  /** The pooler is loaded, as head[0], and belongs to the encoder. */
  hasPooler: boolean;
  /** Number of task classifier layers in the head after the pooler (0: an encoder without a classifier). */
  classifierLayers: number;
  /** Canonical name (`.weight`/`.bias`) -> the name in the checkpoint, where it uses an alias (`.gamma`/`.beta`). */
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
  /** The weight files, in a stable order: what `modelFingerprint` hashes. */
  weightFiles: readonly string[];
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

/** A schema parameter placed in a checkpoint: its canonical name there and its role for merging. */
interface PlacedParam {
  /** The module's checkpoint path, prefix included. */
  module: string;
  /** Canonical checkpoint name (aliases resolved through ModelLayout.legacyNames). */
  name: string;
  role: EncoderRole | 'classifier';
  layer?: number;
}

/** The head layers a checkpoint's layout loads: the pooler (under the encoder prefix) then the classifier layers. */
function headModules(model: ModelShape): { module: string; role: 'pooler' | 'classifier'; activation: Activation; outFeatures: number }[] {
  const { family, layout, config } = model;
  const pooler = layout.hasPooler ? [{ module: `${model.encoderPrefix}${family.pooler!.module}`, role: 'pooler' as const, activation: family.pooler!.activation, outFeatures: config.hiddenSize }] : [];
  const classifier = family.classifier.slice(0, layout.classifierLayers).map((c, i) => ({
    module: c.module, role: 'classifier' as const, activation: c.activation, outFeatures: i === layout.classifierLayers - 1 ? config.numLabels : config.hiddenSize,
  }));
  return [...pooler, ...classifier];
}

/** The schema of a model (which optional modules it has) and where each of its parameters sits in the checkpoint. */
function modelSchema(model: ModelShape): { layout: WeightsLayout; place: (p: SchemaParam) => PlacedParam } {
  const { family, config, encoderPrefix: prefix } = model;
  const head = headModules(model);
  const layout: WeightsLayout = {
    config,
    tokenType: family.embeddings.tokenType !== undefined && config.typeVocabSize > 0,
    project: family.embeddings.project !== undefined && config.embeddingSize !== config.hiddenSize,
    head,
  };
  const place = (p: SchemaParam): PlacedParam => {
    const slot = p.module.slot;
    const at = (module: string, role: PlacedParam['role'], layer?: number): PlacedParam => ({ module, name: `${module}.${p.param}`, role, ...(layer === undefined ? {} : { layer }) });
    switch (slot.part) {
      case 'embeddings':
        return at(`${prefix}${family.embeddings[slot.key]!}`, 'embeddings');
      case 'layer':
        return at(`${prefix}${layerModule(family, slot.key, slot.layer)}`, slot.key, slot.layer);
      case 'head':
        return at(head[slot.index]!.module, head[slot.index]!.role);
    }
  };
  return { layout, place };
}

function checkpointName(layout: ModelLayout, canonical: string): string {
  return layout.legacyNames[canonical] ?? canonical;
}

function missing(source: TensorSource, dir: string, name: string, family: FamilyDescription): UserError {
  const where = source.files.map((f) => path.basename(f)).join(', ');
  return new UserError(`${where}: missing tensor '${name}' (a ${family.name} checkpoint in ${dir})`);
}

/** Counted from the headers before anything is sized from config.json, so a huge num_hidden_layers is refused at once. */
function checkLayerCount(source: TensorSource, family: FamilyDescription, config: EncoderConfig, prefix: string, configLabel: string): void {
  const query = (l: number) => `${prefix}${layerModule(family, 'query', l)}.weight`;
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
  const source = openTensorSource(dir);
  const { family, encoderPrefix } = await chooseFamily(hfConfig, source, configLabel, dir);

  const hasClassifier = source.has(`${family.classifier[0]!.module}.weight`);
  // Part of a head (a bias without its weight, say) is a broken checkpoint, not a bare encoder.
  if (!hasClassifier && family.classifier.some((m) => source.has(`${m.module}.weight`) || source.has(`${m.module}.bias`))) {
    throw missing(source, dir, `${family.classifier[0]!.module}.weight`, family);
  }
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

  const schema = modelSchema({ family, config, encoderPrefix, layout });
  for (const p of schemaParams(schema.layout)) {
    const placed = schema.place(p);
    const names = paramNames(family, placed.module, p.module.kind, p.param);
    const name = names.find((n) => source.has(n));
    if (name === undefined) throw missing(source, dir, placed.name, family);
    if (name !== placed.name) layout.legacyNames[placed.name] = name;
    const info = source.info(name);
    const file = source.fileOf(name);
    if (!FLOAT_DTYPES.includes(info.dtype)) {
      throw new UserError(`${file}: tensor '${name}' has dtype ${info.dtype}, expected a floating-point dtype (${FLOAT_DTYPES.join(', ')})`);
    }
    if (info.shape.length !== p.shape.length || info.shape.some((d, i) => d !== p.shape[i])) {
      throw new UserError(`${file}: tensor '${name}' has shape [${info.shape.join(',')}], expected [${p.shape.join(',')}] from ${configLabel}`);
    }
  }
  return { dir, family, config, hfConfig, encoderPrefix, layout, source, weightFiles: source.files };
}

/**
 * sha256 of a model's weight files, hashed on first use (once per process): commands whose outputs
 * do not record it, such as eval and predict, never read the weights twice.
 */
export function modelFingerprint(model: Pick<LoadedModel, 'weightFiles'>): Promise<string> {
  return sha256Files(model.weightFiles);
}

export interface LoadOptions {
  /** Starts hashing the weights (on another thread) while they load, for a later `modelFingerprint`. */
  prefetchFingerprint?: boolean;
}

/** Loads a Hugging Face model folder (config.json + weights) of any described family into canonical weights. */
export async function loadEncoder(dir: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const { source, ...info } = await describeModel(dir);
  // A failed prefetch is forgotten; the later modelFingerprint call reports it.
  if (options.prefetchFingerprint) modelFingerprint(info).catch(() => undefined);
  const { layout, place } = modelSchema(info);
  return { ...info, weights: buildWeights(layout, (p) => source.float32(checkpointName(info.layout, place(p).name))) };
}

/** Every parameter of the model with its checkpoint name and role, in schema order. */
function placedParams(model: ModelShape): (PlacedParam & { param: SchemaParam })[] {
  const { layout, place } = modelSchema(model);
  return schemaParams(layout).map((param) => ({ ...place(param), name: checkpointName(model.layout, place(param).name), param }));
}

/** Every encoder tensor (embeddings, layers, pooler when loaded; no classifier) with its role, named as in the checkpoint. */
export function encoderTensorRoles(model: ModelShape): TensorRole[] {
  return placedParams(model)
    .filter((p) => p.role !== 'classifier')
    .map(({ name, role, layer, param }) => ({ name, role: role as EncoderRole, ...(layer === undefined ? {} : { layer }), param: param.param, shape: [...param.shape] }));
}

/** The task classifier's tensor names (empty for a bare encoder). */
export function headTensorNames(model: ModelShape): string[] {
  return placedParams(model).filter((p) => p.role === 'classifier').map((p) => p.name);
}

/**
 * The inverse of loading: weights (of this model's shape) as F32 tensors under the checkpoint's names.
 * Used to write merged models and to name per-parameter arrays (full Fisher) the same way.
 */
export function toHfTensors(model: ModelShape, weights: EncoderWeights): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const { name, param } of placedParams(model)) {
    const data = readParam(weights, param);
    const expected = param.shape.reduce((a, b) => a * b, 1);
    if (!data || data.length !== expected) {
      throw new Error(`toHfTensors: '${name}' needs ${expected} values [${param.shape.join(',')}], weights hold ${data?.length ?? 'none'}`);
    }
    out[name] = { dtype: 'F32', shape: [...param.shape], data };
  }
  return out;
}
