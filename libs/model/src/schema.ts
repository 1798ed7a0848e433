import type { Activation, EncoderConfig } from './types.ts';

/**
 * The canonical encoder as data: every module of EncoderWeights, its kind and its shape. Every walk
 * over weights (loading a checkpoint, writing one, naming tensor roles, mapWeights for the engines
 * and Fisher sums) is built from this one schema, so none of them lists the parameters itself.
 */

/** EncoderWeights with every parameter array replaced by a T (tensors, Fisher accumulators, ...). */
export interface LinearOf<T> {
  weight: T;
  bias: T;
  outFeatures: number;
  inFeatures: number;
}
export interface NormOf<T> {
  weight: T;
  bias: T;
}
export interface LayerOf<T> {
  query: LinearOf<T>;
  key: LinearOf<T>;
  value: LinearOf<T>;
  attnOut: LinearOf<T>;
  attnNorm: NormOf<T>;
  ffnIn: LinearOf<T>;
  ffnOut: LinearOf<T>;
  ffnNorm: NormOf<T>;
}
export interface WeightsOf<T> {
  config: EncoderConfig;
  embeddings: { word: T; position: T; tokenType?: T; norm: NormOf<T>; project?: LinearOf<T> };
  layers: LayerOf<T>[];
  head: (LinearOf<T> & { activation: Activation })[];
}

/** A table holds one weight [rows, cols]; a linear weight [out, in] and bias [out]; a norm weight and bias [size]. */
export type ModuleKind = 'table' | 'linear' | 'norm';

/** Sizes a shape is written in, read from EncoderConfig. */
type Dim = 'vocab' | 'positions' | 'typeVocab' | 'E' | 'H' | 'I';

const DIMS: Record<Dim, (c: EncoderConfig) => number> = {
  vocab: (c) => c.vocabSize,
  positions: (c) => c.maxPositions,
  typeVocab: (c) => c.typeVocabSize,
  E: (c) => c.embeddingSize,
  H: (c) => c.hiddenSize,
  I: (c) => c.intermediateSize,
};

interface ModuleSpec<K extends string> {
  key: K;
  kind: ModuleKind;
  dims: readonly Dim[];
}

export type EmbeddingPart = 'word' | 'position' | 'tokenType' | 'norm' | 'project';

const EMBEDDINGS: readonly ModuleSpec<EmbeddingPart>[] = [
  { key: 'word', kind: 'table', dims: ['vocab', 'E'] },
  { key: 'position', kind: 'table', dims: ['positions', 'E'] },
  { key: 'tokenType', kind: 'table', dims: ['typeVocab', 'E'] },
  { key: 'norm', kind: 'norm', dims: ['E'] },
  { key: 'project', kind: 'linear', dims: ['H', 'E'] },
];

/** The per-layer roles every family maps its modules onto (shared/docs/method.md, "Families"). */
export type LayerRole = keyof LayerOf<unknown>;

const LAYER: readonly ModuleSpec<LayerRole>[] = [
  { key: 'query', kind: 'linear', dims: ['H', 'H'] },
  { key: 'key', kind: 'linear', dims: ['H', 'H'] },
  { key: 'value', kind: 'linear', dims: ['H', 'H'] },
  { key: 'attnOut', kind: 'linear', dims: ['H', 'H'] },
  { key: 'attnNorm', kind: 'norm', dims: ['H'] },
  { key: 'ffnIn', kind: 'linear', dims: ['I', 'H'] },
  { key: 'ffnOut', kind: 'linear', dims: ['H', 'I'] },
  { key: 'ffnNorm', kind: 'norm', dims: ['H'] },
];

export const LAYER_ROLES: readonly LayerRole[] = LAYER.map((m) => m.key);

/** Which optional modules a model has, and its head layers (on the first token, in order). */
export interface WeightsLayout {
  config: EncoderConfig;
  tokenType: boolean;
  project: boolean;
  head: readonly { outFeatures: number; activation: Activation }[];
}

/** Where a module sits in EncoderWeights; a family description maps it to a checkpoint name. */
export type ModuleSlot =
  | { part: 'embeddings'; key: EmbeddingPart }
  | { part: 'layer'; key: LayerRole; layer: number }
  | { part: 'head'; index: number };

export interface SchemaModule {
  /** Dotted path in EncoderWeights: 'embeddings.word', 'layers.1.query', 'head.0'. */
  path: string;
  slot: ModuleSlot;
  kind: ModuleKind;
  /** The weight's shape. */
  shape: number[];
  activation?: Activation;
}

export interface SchemaParam {
  /** The module path, plus `.weight` / `.bias` except for tables ('embeddings.word', 'layers.0.query.weight'). */
  name: string;
  module: SchemaModule;
  param: 'weight' | 'bias';
  shape: number[];
}

/** Every module of a model of this layout, in one fixed order: embeddings, layers, head. */
export function schemaModules(layout: WeightsLayout): SchemaModule[] {
  const c = layout.config;
  const shape = (dims: readonly Dim[]) => dims.map((d) => DIMS[d](c));
  const present = { tokenType: layout.tokenType, project: layout.project } as Partial<Record<EmbeddingPart, boolean>>;
  const modules: SchemaModule[] = EMBEDDINGS.filter((m) => present[m.key] ?? true).map((m) => ({
    path: `embeddings.${m.key}`, slot: { part: 'embeddings', key: m.key }, kind: m.kind, shape: shape(m.dims),
  }));
  for (let l = 0; l < c.numLayers; l++) {
    for (const m of LAYER) modules.push({ path: `layers.${l}.${m.key}`, slot: { part: 'layer', key: m.key, layer: l }, kind: m.kind, shape: shape(m.dims) });
  }
  layout.head.forEach((h, index) => {
    modules.push({ path: `head.${index}`, slot: { part: 'head', index }, kind: 'linear', shape: [h.outFeatures, c.hiddenSize], activation: h.activation });
  });
  return modules;
}

/** A module's parameters: a table's one array, or weight then bias. */
export function moduleParams(module: SchemaModule): SchemaParam[] {
  if (module.kind === 'table') return [{ name: module.path, module, param: 'weight', shape: module.shape }];
  return [
    { name: `${module.path}.weight`, module, param: 'weight', shape: module.shape },
    { name: `${module.path}.bias`, module, param: 'bias', shape: [module.shape[0]!] },
  ];
}

export function schemaParams(layout: WeightsLayout): SchemaParam[] {
  return schemaModules(layout).flatMap(moduleParams);
}

/** Builds weights of this layout, asking `value` for each parameter in schema order. */
export function buildWeights<T>(layout: WeightsLayout, value: (p: SchemaParam) => T): WeightsOf<T> {
  const root: Record<string, unknown> = { config: layout.config, embeddings: {}, layers: [], head: [] };
  for (const module of schemaModules(layout)) {
    const params = moduleParams(module).map(value);
    let node: unknown = params[0];
    if (module.kind !== 'table') {
      const [weight, bias] = params;
      node = module.kind === 'norm' ? { weight, bias } : { weight, bias, outFeatures: module.shape[0], inFeatures: module.shape[1] };
      if (module.activation !== undefined) (node as { activation: Activation }).activation = module.activation;
    }
    const keys = module.path.split('.');
    let at = root;
    for (const k of keys.slice(0, -1)) at = (at[k] ??= {}) as Record<string, unknown>;
    at[keys.at(-1)!] = node;
  }
  return root as unknown as WeightsOf<T>;
}

/** The value of one parameter in weights of the parameter's layout. */
export function readParam<T>(w: WeightsOf<T>, p: SchemaParam): T | undefined {
  let at: unknown = w;
  for (const k of p.module.path.split('.')) at = (at as Record<string, unknown> | undefined)?.[k];
  return (p.module.kind === 'table' ? at : (at as Record<string, unknown> | undefined)?.[p.param]) as T | undefined;
}

/** The layout of existing weights. */
export function layoutOf(w: WeightsOf<unknown>): WeightsLayout {
  return { config: w.config, tokenType: w.embeddings.tokenType !== undefined, project: w.embeddings.project !== undefined, head: w.head };
}

export type Visit<A, B> = (value: A, shape: number[], name: string) => B;

/**
 * Maps every parameter of `w`, in schema order (embeddings, layers, head), keeping the structure.
 * The order is what lets a flat list of tensors (for tf.grads) be put back into the structure.
 */
export function mapWeights<A, B>(w: WeightsOf<A>, f: Visit<A, B>): WeightsOf<B> {
  return buildWeights(layoutOf(w), (p) => f(readParam(w, p) as A, [...p.shape], p.name));
}

/** The parameters of `w` in mapWeights order. */
export function flattenWeights<A>(w: WeightsOf<A>): A[] {
  return schemaParams(layoutOf(w)).map((p) => readParam(w, p) as A);
}
