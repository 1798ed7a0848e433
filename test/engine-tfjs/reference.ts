// A float64, loop-by-loop encoder written independently of the tfjs graph: the oracle for random models.
import type { EncoderConfig, EncoderWeights } from '@fisher-merge/model';
import { positionIds } from '@fisher-merge/model';
import { activation as act } from '../support.ts';
import type { TokenBatch } from '@fisher-merge/core';
import { mapWeights, type LinearOf, type NormOf, type WeightsOf } from '@fisher-merge/model';

export type W64 = WeightsOf<Float64Array>;

export const toF64 = (w: EncoderWeights): W64 => mapWeights(w, (a) => Float64Array.from(a));

const LOWEST = -3.4028234663852886e38;



function linear(x: number[][], l: LinearOf<Float64Array>): number[][] {
  return x.map((row) => {
    const out = new Array<number>(l.outFeatures);
    for (let o = 0; o < l.outFeatures; o++) {
      let s = l.bias[o]!;
      for (let i = 0; i < l.inFeatures; i++) s += l.weight[o * l.inFeatures + i]! * row[i]!;
      out[o] = s;
    }
    return out;
  });
}

function norm(x: number[][], n: NormOf<Float64Array>, eps: number): number[][] {
  return x.map((row) => {
    const mean = row.reduce((a, b) => a + b, 0) / row.length;
    const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length;
    const inv = 1 / Math.sqrt(variance + eps);
    return row.map((v, i) => (v - mean) * inv * n.weight[i]! + n.bias[i]!);
  });
}

export interface Masks {
  head: Float64Array; // [L, H]
  neuron: Float64Array; // [L, I]
}

export const onesMasks = (c: EncoderConfig): Masks => ({
  head: new Float64Array(c.numLayers * c.numHeads).fill(1),
  neuron: new Float64Array(c.numLayers * c.intermediateSize).fill(1),
});

/** Logits of example b of the batch. */
export function refLogits(w: W64, batch: TokenBatch, b: number, masks: Masks = onesMasks(w.config)): number[] {
  const c = w.config;
  const T = batch.seqLen;
  const E = c.embeddingSize;
  const pos = positionIds(c, batch);
  let h: number[][] = [];
  for (let t = 0; t < T; t++) {
    const i = b * T + t;
    const row = new Array<number>(E);
    for (let e = 0; e < E; e++) {
      let v = w.embeddings.word[batch.inputIds[i]! * E + e]! + w.embeddings.position[pos[i]! * E + e]!;
      if (w.embeddings.tokenType) v += w.embeddings.tokenType[batch.tokenTypeIds[i]! * E + e]!;
      row[e] = v;
    }
    h.push(row);
  }
  h = norm(h, w.embeddings.norm, c.layerNormEps);
  if (w.embeddings.project) h = linear(h, w.embeddings.project);
  const H = c.numHeads;
  const d = c.hiddenSize / H;
  const mask = (t: number) => (batch.attentionMask[b * T + t] ? 0 : LOWEST);
  w.layers.forEach((l, li) => {
    const q = linear(h, l.query);
    const k = linear(h, l.key);
    const v = linear(h, l.value);
    const ctx = h.map(() => new Array<number>(c.hiddenSize).fill(0));
    for (let hd = 0; hd < H; hd++) {
      for (let i = 0; i < T; i++) {
        const s = new Array<number>(T);
        for (let j = 0; j < T; j++) {
          let dot = 0;
          for (let e = 0; e < d; e++) dot += q[i]![hd * d + e]! * k[j]![hd * d + e]!;
          s[j] = dot / Math.sqrt(d) + mask(j);
        }
        const mx = Math.max(...s);
        const ex = s.map((x) => Math.exp(x - mx));
        const z = ex.reduce((a, x) => a + x, 0);
        for (let j = 0; j < T; j++) {
          const p = (ex[j]! / z) * masks.head[li * H + hd]!;
          for (let e = 0; e < d; e++) ctx[i]![hd * d + e]! += p * v[j]![hd * d + e]!;
        }
      }
    }
    const a1 = linear(ctx, l.attnOut).map((r, i) => r.map((x, e) => x + h[i]![e]!));
    h = norm(a1, l.attnNorm, c.layerNormEps);
    const inter = linear(h, l.ffnIn).map((r) => r.map((x, n) => act(x, c.hiddenAct) * masks.neuron[li * c.intermediateSize + n]!));
    const a2 = linear(inter, l.ffnOut).map((r, i) => r.map((x, e) => x + h[i]![e]!));
    h = norm(a2, l.ffnNorm, c.layerNormEps);
  });
  let out = [h[0]!];
  for (const layer of w.head) out = linear(out, layer).map((r) => r.map((x) => act(x, layer.activation)));
  return out[0]!;
}

/** -log p(label) for classification, squared error for regression. */
export function refLoss(c: EncoderConfig, logits: number[], label: number): number {
  if (c.problemType === 'regression') return (logits[0]! - label) ** 2;
  const mx = Math.max(...logits);
  const lse = mx + Math.log(logits.reduce((a, x) => a + Math.exp(x - mx), 0));
  return lse - logits[Math.round(label)]!;
}
