import type { Activation, EncoderConfig } from './types.ts';

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

export type Visit<A, B> = (value: A, shape: number[], name: string) => B;

/**
 * Maps every parameter of `w`, in one fixed order (embeddings, layers, head), keeping the structure.
 * The order is what lets a flat list of tensors (for tf.grads) be put back into the structure.
 */
export function mapWeights<A, B>(w: WeightsOf<A>, f: Visit<A, B>): WeightsOf<B> {
  const E = w.config.embeddingSize;
  const lin = (l: LinearOf<A>, name: string): LinearOf<B> => ({
    weight: f(l.weight, [l.outFeatures, l.inFeatures], `${name}.weight`),
    bias: f(l.bias, [l.outFeatures], `${name}.bias`),
    outFeatures: l.outFeatures,
    inFeatures: l.inFeatures,
  });
  const norm = (n: NormOf<A>, size: number, name: string): NormOf<B> => ({
    weight: f(n.weight, [size], `${name}.weight`),
    bias: f(n.bias, [size], `${name}.bias`),
  });
  const e = w.embeddings;
  const c = w.config;
  // Statements, not one literal, so that the visiting order is explicit.
  const word = f(e.word, [c.vocabSize, E], 'embeddings.word');
  const position = f(e.position, [c.maxPositions, E], 'embeddings.position');
  const tokenType = e.tokenType === undefined ? undefined : f(e.tokenType, [c.typeVocabSize, E], 'embeddings.tokenType');
  const embeddings: WeightsOf<B>['embeddings'] = { word, position, norm: norm(e.norm, E, 'embeddings.norm') };
  if (tokenType !== undefined) embeddings.tokenType = tokenType;
  if (e.project !== undefined) embeddings.project = lin(e.project, 'embeddings.project');
  const hidden = c.hiddenSize;
  const layers = w.layers.map((l, i): LayerOf<B> => {
    const p = `layers.${i}`;
    return {
      query: lin(l.query, `${p}.query`),
      key: lin(l.key, `${p}.key`),
      value: lin(l.value, `${p}.value`),
      attnOut: lin(l.attnOut, `${p}.attnOut`),
      attnNorm: norm(l.attnNorm, hidden, `${p}.attnNorm`),
      ffnIn: lin(l.ffnIn, `${p}.ffnIn`),
      ffnOut: lin(l.ffnOut, `${p}.ffnOut`),
      ffnNorm: norm(l.ffnNorm, hidden, `${p}.ffnNorm`),
    };
  });
  const head = w.head.map((h, i) => ({ ...lin(h, `head.${i}`), activation: h.activation }));
  return { config: w.config, embeddings, layers, head };
}

/** The parameters of `w` in mapWeights order. */
export function flattenWeights<A>(w: WeightsOf<A>): A[] {
  const out: A[] = [];
  mapWeights(w, (a) => out.push(a));
  return out;
}
