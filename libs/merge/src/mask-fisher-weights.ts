import type { MaskFisher } from '@fisher-merge/fisher';
import type { Params, ParamSpec, TensorSlot } from './rule.ts';
import type { TensorWeight } from './weighted-average.ts';

/** The paper's derived weights of one model: zero nodes fixed, layer means and the universal weight. */
export interface MaskFisherWeights {
  numHeads: number;
  intermediateSize: number;
  head: Float64Array;
  neuron: Float64Array;
  headMean: Float64Array;
  neuronMean: Float64Array;
  universal: number;
}

export type MaskFisherNormalization = 'none' | 'count' | 'mass';

/** The parameters of every rule weighting by mask-node Fisher. */
export const MASK_FISHER_PARAMS: readonly ParamSpec[] = [
  { name: 'universal', type: 'boolean', default: true, help: 'weight embeddings and pooler by the mean over layers of head and neuron means (the paper); false averages them uniformly' },
  {
    name: 'normalize',
    type: 'string',
    default: 'none',
    choices: ['none', 'count', 'mass'],
    help: "none: raw sums (the paper); count: divide each model's sums by its example count; mass: divide each model's head and neuron Fisher by their means, so no task dominates by its loss's scale (MSE vs cross-entropy)",
  },
];

export function maskFisherWeights(fishers: readonly MaskFisher[], opts: { normalize: MaskFisherNormalization }): MaskFisherWeights[] {
  const first = fishers[0];
  const mean = (a: Float64Array) => a.reduce((s, v) => s + v, 0) / a.length;
  const scaled = fishers.map((f) => {
    const byCount = 1 / Math.max(f.examples, 1);
    const [h, n] = opts.normalize === 'mass' ? [1 / (mean(f.head) || 1), 1 / (mean(f.neuron) || 1)] : opts.normalize === 'count' ? [byCount, byCount] : [1, 1];
    return { head: f.head.map((v) => v * h), neuron: f.neuron.map((v) => v * n) };
  });
  // A node that no model's Fisher sees (exactly 0 everywhere) is split equally.
  for (const key of ['head', 'neuron'] as const) {
    for (let k = 0; k < scaled[0][key].length; k++) {
      if (scaled.every((f) => f[key][k] === 0)) for (const f of scaled) f[key][k] = 1;
    }
  }
  const L = first.numLayers, H = first.numHeads, I = first.intermediateSize;
  return scaled.map(({ head, neuron }) => {
    const headMean = new Float64Array(L);
    const neuronMean = new Float64Array(L);
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) headMean[l] += head[l * H + h] / H;
      for (let i = 0; i < I; i++) neuronMean[l] += neuron[l * I + i] / I;
    }
    let universal = 0;
    for (let l = 0; l < L; l++) universal += (headMean[l] + neuronMean[l]) / L;
    return { numHeads: H, intermediateSize: I, head, neuron, headMean, neuronMean, universal };
  });
}

/** Each model's weight of one tensor under the paper's rule (method.md section 3, step 3). */
export function maskFisherSlotWeight(d: MaskFisherWeights, slot: TensorSlot, universal: boolean): TensorWeight {
  const l = slot.layer ?? 0;
  switch (slot.role) {
    case 'query':
    case 'key': {
      const rows = slot.shape[0];
      const headSize = rows / d.numHeads;
      const perRow = new Float64Array(rows);
      for (let r = 0; r < rows; r++) perRow[r] = d.head[l * d.numHeads + Math.floor(r / headSize)];
      return { perRow };
    }
    case 'value':
    case 'attnOut':
    case 'attnNorm':
      return d.headMean[l];
    case 'ffnIn':
      return { perRow: d.neuron.subarray(l * d.intermediateSize, (l + 1) * d.intermediateSize) };
    case 'ffnOut':
    case 'ffnNorm':
      return d.neuronMean[l];
    case 'embeddings':
    case 'pooler':
      return universal ? d.universal : 1;
  }
}

/** The per-slot weights of every model, from the rule's parameters (`universal`, `normalize`). */
export function maskFisherSlotWeights(fishers: readonly MaskFisher[], params: Params): (slot: TensorSlot) => TensorWeight[] {
  const derived = maskFisherWeights(fishers, { normalize: params.normalize as MaskFisherNormalization });
  const universal = params.universal !== false;
  return (slot) => derived.map((d) => maskFisherSlotWeight(d, slot, universal));
}
