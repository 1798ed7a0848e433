// A plain float64 reference of the encoder for one example, used for finite differences in the tests.
import { mapWeights, type EncoderWeights } from '@fisher-merge/model';
import { activation as act } from '../support.ts';


/** Float64 copies of every weight array, keyed by dotted EncoderWeights path (mutable for perturbation). */
export type Params = Map<string, Float64Array>;

export function params(w: EncoderWeights): Params {
  const p: Params = new Map();
  mapWeights(w, (a, _shape, path) => (p.set(path, Float64Array.from(a)), a));
  return p;
}

export interface Example {
  ids: number[];
  mask: number[];
  types: number[];
  positions: number[];
  label: number;
}

export interface Masks {
  head: Float64Array; // [L,H]
  neuron: Float64Array; // [L,I]
}



type Mat = Float64Array[]; // rows

function linear(x: Mat, p: Params, path: string, out: number): Mat {
  const W = p.get(`${path}.weight`)!, b = p.get(`${path}.bias`)!;
  const n = x[0].length;
  return x.map((row) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = b[o];
      for (let i = 0; i < n; i++) s += W[o * n + i] * row[i];
      y[o] = s;
    }
    return y;
  });
}

function layerNorm(x: Mat, p: Params, path: string, eps: number): Mat {
  const g = p.get(`${path}.weight`)!, b = p.get(`${path}.bias`)!;
  return x.map((row) => {
    const n = row.length;
    const mu = row.reduce((a, v) => a + v, 0) / n;
    const v = row.reduce((a, x_) => a + (x_ - mu) ** 2, 0) / n;
    const inv = 1 / Math.sqrt(v + eps);
    return row.map((x_, i) => (x_ - mu) * inv * g[i] + b[i]);
  });
}

/** Logits and loss (CE, or squared error for regression) of one example, in float64. */
export function reference(w: EncoderWeights, p: Params, ex: Example, masks?: Masks): { logits: number[]; loss: number } {
  const c = w.config;
  const T = ex.ids.length, E = c.embeddingSize, D = c.hiddenSize, H = c.numHeads, dh = D / H, I = c.intermediateSize;
  const word = p.get('embeddings.word')!, pos = p.get('embeddings.position')!, tt = p.get('embeddings.tokenType');
  let x: Mat = ex.ids.map((id, t) => {
    const row = new Float64Array(E);
    for (let e = 0; e < E; e++) row[e] = word[id * E + e] + pos[ex.positions[t] * E + e] + (tt ? tt[ex.types[t] * E + e] : 0);
    return row;
  });
  x = layerNorm(x, p, 'embeddings.norm', c.layerNormEps);
  if (w.embeddings.project) x = linear(x, p, 'embeddings.project', D);
  for (let l = 0; l < c.numLayers; l++) {
    const q = linear(x, p, `layers.${l}.query`, D), k = linear(x, p, `layers.${l}.key`, D), v = linear(x, p, `layers.${l}.value`, D);
    const ctx: Mat = x.map(() => new Float64Array(D));
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const s = new Float64Array(T);
        for (let u = 0; u < T; u++) {
          let dot = 0;
          for (let j = 0; j < dh; j++) dot += q[t][h * dh + j] * k[u][h * dh + j];
          s[u] = dot / Math.sqrt(dh) + (1 - ex.mask[u]) * -3.4028234663852886e38;
        }
        const m = Math.max(...s);
        const ex_ = s.map((z) => Math.exp(z - m));
        const Z = ex_.reduce((a, b) => a + b, 0);
        const hm = masks ? masks.head[l * H + h] : 1;
        for (let u = 0; u < T; u++) {
          const pr = (ex_[u] / Z) * hm;
          for (let j = 0; j < dh; j++) ctx[t][h * dh + j] += pr * v[u][h * dh + j];
        }
      }
    }
    const a = linear(ctx, p, `layers.${l}.attnOut`, D).map((r, t) => r.map((z, i) => z + x[t][i]));
    const n1 = layerNorm(a, p, `layers.${l}.attnNorm`, c.layerNormEps);
    const G = linear(n1, p, `layers.${l}.ffnIn`, I).map((r) => r.map((z, i) => act(z, c.hiddenAct) * (masks ? masks.neuron[l * I + i] : 1)));
    const f = linear(G, p, `layers.${l}.ffnOut`, D).map((r, t) => r.map((z, i) => z + n1[t][i]));
    x = layerNorm(f, p, `layers.${l}.ffnNorm`, c.layerNormEps);
  }
  let h: Mat = [x[0]];
  w.head.forEach((hl, k) => {
    h = linear(h, p, `head.${k}`, hl.outFeatures).map((r) => r.map((z) => act(z, hl.activation)));
  });
  const logits = Array.from(h[0]);
  if (c.problemType === 'regression') return { logits, loss: (logits[0] - ex.label) ** 2 };
  const m = Math.max(...logits);
  const lse = m + Math.log(logits.reduce((a, z) => a + Math.exp(z - m), 0));
  return { logits, loss: lse - logits[ex.label] };
}
