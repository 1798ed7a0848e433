import type { MaskFisher } from '@fisher-merge/fisher';
import type { TensorWeight } from './weighted-average.ts';

/** A tensor of the shared encoder and the role its rows play (from the family description). */
export interface TensorSlot {
  name: string;
  role: 'query' | 'key' | 'value' | 'attnOut' | 'attnNorm' | 'ffnIn' | 'ffnOut' | 'ffnNorm' | 'embeddings' | 'pooler';
  layer?: number;
  param: 'weight' | 'bias';
  shape: number[];
}

/** Per-parameter statistics with the encoder's tensor names (full diagonal Fisher). */
export type ParameterStats = (name: string) => Float32Array;

export interface MergeInputs {
  maskFishers?: readonly MaskFisher[];
  fullFishers?: readonly ParameterStats[];
}

export interface ParamSpec {
  name: string;
  type: 'number' | 'boolean' | 'string';
  default: number | boolean | string;
  choices?: readonly string[];
  help: string;
}

export type Params = Record<string, number | boolean | string>;

export interface MergeRule {
  name: string;
  summary: string;
  params: readonly ParamSpec[];
  needs: { maskFisher?: boolean; fullFisher?: boolean; base?: boolean };
  /** 'average' normalises by the summed weights; 'sum' adds lambda-weighted tensors (task vectors). */
  combine: 'average' | 'sum';
  /** The weights of each model for each tensor; `prepare` runs once per merge, over all of its tensors. */
  prepare(inputs: MergeInputs, params: Params, slots: readonly TensorSlot[]): (slot: TensorSlot) => TensorWeight[];
}

const isotropic: MergeRule = {
  name: 'isotropic',
  summary: 'Plain (lambda-weighted) average of the encoders.',
  params: [],
  needs: {},
  combine: 'average',
  prepare: () => () => [],
};

const taskArithmetic: MergeRule = {
  name: 'task-arithmetic',
  summary: 'base + scale * sum_j lambda_j (theta_j - base) (Ilharco et al.).',
  params: [{ name: 'scale', type: 'number', default: 1, help: 'scaling coefficient of the summed task vectors' }],
  needs: { base: true },
  combine: 'sum',
  prepare: () => () => [],
};

const maskFisher: MergeRule = {
  name: 'mask-fisher',
  summary: "Fisher of attention-head and FFN-neuron mask nodes (the paper's rule).",
  params: [
    { name: 'universal', type: 'boolean', default: true, help: 'weight embeddings and pooler by the mean over layers of head and neuron means (the paper); false averages them uniformly' },
    {
      name: 'normalize',
      type: 'string',
      default: 'none',
      choices: ['none', 'count', 'mass'],
      help: "none: raw sums (the paper); count: divide each model's sums by its example count; mass: divide each model's head and neuron Fisher by their means, so no task dominates by its loss's scale (MSE vs cross-entropy)",
    },
  ],
  needs: { maskFisher: true },
  combine: 'average',
  prepare(inputs, params) {
    const fishers = inputs.maskFishers!;
    const derived = maskFisherWeights(fishers, { normalize: params.normalize as MaskFisherNormalization });
    const universal = params.universal !== false;
    return (slot) => derived.map((d) => {
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
    });
  },
};

const fullFisher: MergeRule = {
  name: 'full-fisher',
  summary: 'Diagonal Fisher of every parameter (Matena & Raffel).',
  params: [
    { name: 'epsilon', type: 'number', default: 1e-8, help: 'added to every Fisher value (the fixtures\' reference)' },
    { name: 'floor', type: 'number', default: 0, help: 'lower bound on every Fisher value (Matena & Raffel\'s code: 1e-6)' },
    { name: 'l2-normalize', type: 'boolean', default: false, help: "divide each model's Fisher by its L2 norm over all encoder parameters" },
  ],
  needs: { fullFisher: true },
  combine: 'average',
  prepare(inputs, params, slots) {
    const fishers = inputs.fullFishers!;
    const epsilon = Number(params.epsilon);
    const floor = Number(params.floor);
    // L2 normalisation divides each model's Fisher by its norm over every merged tensor.
    const scales = fishers.map((get) => {
      if (params['l2-normalize'] !== true) return 1;
      let squares = 0;
      for (const slot of slots) for (const v of get(slot.name)) squares += v * v;
      return squares > 0 ? 1 / Math.sqrt(squares) : 1;
    });
    return (slot) => fishers.map((get, j) => {
      const f = get(slot.name);
      const scale = scales[j]!;
      const perElement = new Float64Array(f.length);
      for (let e = 0; e < f.length; e++) perElement[e] = Math.max(f[e] * scale, floor) + epsilon;
      return { perElement };
    });
  },
};

export const MERGE_RULES: Readonly<Record<string, MergeRule>> = Object.fromEntries(
  [maskFisher, isotropic, taskArithmetic, fullFisher].map((r) => [r.name, r]),
);

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
