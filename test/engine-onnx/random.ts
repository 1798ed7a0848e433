import { rng as unitRng } from '../support.ts';
import type { TokenBatch } from '@fisher-merge/core';
import type { Activation, EncoderConfig, EncoderWeights, HeadLayer, Linear } from '@fisher-merge/model';

/** Deterministic uniform [-1, 1) generator. */
export function rng(seed: number): () => number {
  const uniform = unitRng(seed);
  return () => uniform() * 2 - 1;
}

export function bertConfig(p: Partial<EncoderConfig> & Pick<EncoderConfig, 'numLayers' | 'hiddenSize' | 'numHeads' | 'intermediateSize'>): EncoderConfig {
  return {
    family: 'bert',
    vocabSize: 30522,
    maxPositions: 512,
    typeVocabSize: 2,
    embeddingSize: p.hiddenSize,
    layerNormEps: 1e-12,
    hiddenAct: 'gelu',
    padTokenId: 0,
    positionStyle: 'absolute',
    numLabels: 2,
    problemType: 'single_label_classification',
    ...p,
  };
}

/** Random weights with a BERT-like scale; head = pooler (tanh) + classifier unless given. */
export function randomWeights(c: EncoderConfig, seed = 1, head?: { out: number; activation: Activation }[], scale = 0.05): EncoderWeights {
  const r = rng(seed);
  const arr = (n: number, s = scale, base = 0) => Float32Array.from({ length: n }, () => base + s * r());
  const lin = (out: number, inp: number): Linear => ({ weight: arr(out * inp), bias: arr(out), outFeatures: out, inFeatures: inp });
  const norm = (n: number) => ({ weight: arr(n, 0.1, 1), bias: arr(n, 0.1) });
  const D = c.hiddenSize, E = c.embeddingSize;
  const spec = head ?? [
    { out: D, activation: 'tanh' as const },
    { out: c.numLabels, activation: 'none' as const },
  ];
  let inp = D;
  const headLayers: HeadLayer[] = spec.map((h) => {
    const l = { ...lin(h.out, inp), activation: h.activation };
    inp = h.out;
    return l;
  });
  return {
    config: c,
    embeddings: {
      word: arr(c.vocabSize * E, 1),
      position: arr(c.maxPositions * E, 0.5),
      tokenType: c.typeVocabSize > 0 ? arr(c.typeVocabSize * E, 0.5) : undefined,
      norm: norm(E),
      project: E !== D ? lin(D, E) : undefined,
    },
    layers: Array.from({ length: c.numLayers }, () => ({
      query: lin(D, D),
      key: lin(D, D),
      value: lin(D, D),
      attnOut: lin(D, D),
      attnNorm: norm(D),
      ffnIn: lin(c.intermediateSize, D),
      ffnOut: lin(D, c.intermediateSize),
      ffnNorm: norm(D),
    })),
    head: headLayers,
  };
}

/** Rows of the given lengths right-padded to `width` with random ids; token type 1 on each row's second half. */
export function paddedBatch(c: EncoderConfig, lengths: number[], width: number, seed: number, label = (b: number, _r: () => number) => b % c.numLabels): TokenBatch {
  const r = rng(seed);
  const B = lengths.length;
  const inputIds = new Int32Array(B * width).fill(c.padTokenId);
  const attentionMask = new Int32Array(B * width);
  const tokenTypeIds = new Int32Array(B * width);
  lengths.forEach((len, b) => {
    for (let t = 0; t < len; t++) {
      inputIds[b * width + t] = 2 + Math.floor(((r() + 1) / 2) * (c.vocabSize - 2));
      attentionMask[b * width + t] = 1;
      tokenTypeIds[b * width + t] = c.typeVocabSize > 0 && t >= len / 2 ? 1 : 0;
    }
  });
  return { batchSize: B, seqLen: width, inputIds, attentionMask, tokenTypeIds, labels: Float32Array.from(lengths, (_, b) => label(b, r)) };
}
