// Seeded random tiny encoders and batches, covering the family variations the engine must handle.
import type { Activation, EncoderConfig, EncoderWeights, HeadLayer, Linear, Norm } from '@fisher-merge/model';
import type { TokenBatch } from '@fisher-merge/core';
import { rng } from '../support.ts';

export { rng };

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

export function randomConfig(r: () => number, over: Partial<EncoderConfig> = {}): EncoderConfig {
  const numHeads = pick(r, [1, 2, 3]);
  const hiddenSize = numHeads * pick(r, [4, 6]);
  const numLabels = pick(r, [1, 2, 3]);
  const positionStyle = pick(r, ['absolute', 'padding-offset'] as const);
  return {
    family: 'random',
    numLayers: pick(r, [1, 2]),
    hiddenSize,
    numHeads,
    intermediateSize: pick(r, [8, 12]),
    vocabSize: 40,
    maxPositions: 24,
    typeVocabSize: pick(r, [0, 2]),
    embeddingSize: pick(r, [hiddenSize, hiddenSize, 5]),
    layerNormEps: pick(r, [1e-12, 1e-5]),
    hiddenAct: pick(r, ['gelu', 'gelu_new', 'relu'] as const),
    padTokenId: positionStyle === 'absolute' ? 0 : 1,
    positionStyle,
    numLabels,
    problemType: numLabels === 1 ? 'regression' : 'single_label_classification',
    ...over,
  };
}

/** Values exactly representable in float32, so a float64 oracle sees the same weights as the engine. */
function arr(r: () => number, n: number, scale: number, offset = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + scale * (2 * r() - 1);
  return a;
}

export function randomWeights(c: EncoderConfig, seed = 1): EncoderWeights {
  const r = rng(seed);
  const lin = (outF: number, inF: number): Linear => ({
    weight: arr(r, outF * inF, 1.2 / Math.sqrt(inF)),
    bias: arr(r, outF, 0.1),
    outFeatures: outF,
    inFeatures: inF,
  });
  const norm = (n: number): Norm => ({ weight: arr(r, n, 0.2, 1), bias: arr(r, n, 0.1) });
  const E = c.embeddingSize;
  const Hd = c.hiddenSize;
  const embeddings: EncoderWeights['embeddings'] = {
    word: arr(r, c.vocabSize * E, 1),
    position: arr(r, c.maxPositions * E, 0.5),
    norm: norm(E),
  };
  if (c.typeVocabSize > 0) embeddings.tokenType = arr(r, c.typeVocabSize * E, 0.5);
  if (E !== Hd) embeddings.project = lin(Hd, E);
  const layers = Array.from({ length: c.numLayers }, () => ({
    query: lin(Hd, Hd),
    key: lin(Hd, Hd),
    value: lin(Hd, Hd),
    attnOut: lin(Hd, Hd),
    attnNorm: norm(Hd),
    ffnIn: lin(c.intermediateSize, Hd),
    ffnOut: lin(Hd, c.intermediateSize),
    ffnNorm: norm(Hd),
  }));
  // BERT (pooler tanh + classifier), RoBERTa (dense + out_proj) or a bare classifier.
  const acts: Activation[][] = [['tanh', 'none'], ['gelu', 'none'], ['none']];
  const head: HeadLayer[] = pick(r, acts).map((activation, i, all) => ({
    ...lin(i === all.length - 1 ? c.numLabels : Hd, Hd),
    activation,
  }));
  return { config: c, embeddings, layers, head };
}

/** A batch with random lengths (trailing padding), token types and labels. */
export function randomBatch(c: EncoderConfig, B: number, T: number, seed = 2): TokenBatch {
  const r = rng(seed);
  const inputIds = new Int32Array(B * T).fill(c.padTokenId);
  const attentionMask = new Int32Array(B * T);
  const tokenTypeIds = new Int32Array(B * T);
  const labels = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const len = b === 0 ? T : 2 + Math.floor(r() * (T - 1));
    const split = 1 + Math.floor(r() * len);
    for (let t = 0; t < len; t++) {
      // Avoid the pad id among real tokens (RoBERTa positions count non-pad tokens).
      inputIds[b * T + t] = 2 + Math.floor(r() * (c.vocabSize - 2));
      attentionMask[b * T + t] = 1;
      tokenTypeIds[b * T + t] = c.typeVocabSize > 1 && t >= split ? 1 : 0;
    }
    labels[b] = c.problemType === 'regression' ? 4 * r() - 2 : Math.floor(r() * c.numLabels);
  }
  return { batchSize: B, seqLen: T, inputIds, attentionMask, tokenTypeIds, labels };
}
