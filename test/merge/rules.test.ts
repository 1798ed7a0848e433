import { describe, expect, it } from 'vitest';
import { emptyMaskFisher, type MaskFisher } from '@fisher-merge/fisher';
import { MERGE_RULES, mergeEncoders, resolveRule, type GramOfSlot, type TensorSlot } from '@fisher-merge/merge';

// A two-layer encoder with 2 heads of size 2 (hidden 4) and 3 FFN neurons.
const slots: TensorSlot[] = [
  { name: 'embeddings.word_embeddings.weight', role: 'embeddings', param: 'weight', shape: [5, 4] },
  ...[0, 1].flatMap((layer): TensorSlot[] => [
    { name: `l${layer}.query.weight`, role: 'query', layer, param: 'weight', shape: [4, 4] },
    { name: `l${layer}.query.bias`, role: 'query', layer, param: 'bias', shape: [4] },
    { name: `l${layer}.value.weight`, role: 'value', layer, param: 'weight', shape: [4, 4] },
    { name: `l${layer}.ffn_in.weight`, role: 'ffnIn', layer, param: 'weight', shape: [3, 4] },
    { name: `l${layer}.ffn_in.bias`, role: 'ffnIn', layer, param: 'bias', shape: [3] },
    { name: `l${layer}.ffn_out.weight`, role: 'ffnOut', layer, param: 'weight', shape: [4, 3] },
  ]),
  { name: 'pooler.dense.bias', role: 'pooler', param: 'bias', shape: [4] },
];

function randomModel(seed: number): Map<string, Float32Array> {
  let s = seed;
  const r = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
  return new Map(slots.map((slot) => [slot.name, Float32Array.from({ length: slot.shape.reduce((a, b) => a * b, 1) }, r)]));
}

function fisher(head: number[], neuron: number[]): MaskFisher {
  const f = emptyMaskFisher({ numLayers: 2, numHeads: 2, intermediateSize: 3 }, { mode: 'batch', batchSize: 32, task: 't', modelFingerprint: 'm' });
  f.head.set(head);
  f.neuron.set(neuron);
  return f;
}

/** A positive definite Gram (X^T X of more random rows than columns) per input width, for every linear weight slot. */
function grams(seed: number): GramOfSlot {
  let s = seed;
  const r = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
  const byWidth = new Map<number, Float64Array>();
  return (slot) => {
    if (slot.param !== 'weight' || slot.role === 'embeddings' || slot.shape.length !== 2) return undefined;
    const dim = slot.shape[1]!;
    if (!byWidth.has(dim)) {
      const gram = new Float64Array(dim * dim);
      for (let n = 0; n < dim + 2; n++) {
        const x = Array.from({ length: dim }, r);
        for (let i = 0; i < dim; i++) for (let k = 0; k < dim; k++) gram[i * dim + k]! += x[i]! * x[k]!;
      }
      byWidth.set(dim, gram);
    }
    return { input: `${slot.layer ?? 'pooler'}.${slot.role === 'key' || slot.role === 'value' ? 'query' : slot.role}`, sum: byWidth.get(dim)!, count: 3 };
  };
}

const models = [randomModel(7), randomModel(11)];
const fishers = [fisher([1, 3, 0, 2], [1, 0, 2, 4, 0, 1]), fisher([3, 1, 0, 2], [0, 0, 2, 1, 1, 0])];
const tensor = (j: number, slot: TensorSlot) => models[j].get(slot.name)!;

describe('merge rules', () => {
  it('merging a model with itself returns it unchanged, for every method', () => {
    for (const rule of Object.values(MERGE_RULES)) {
      const merged = mergeEncoders({
        slots, models: 2, rule, tensor: (_j, slot) => models[0].get(slot.name)!,
        base: rule.needs.base ? (slot) => models[1].get(slot.name)! : undefined,
        // Sums of two equal task vectors at weight 1/2 each, means of them at any weight.
        lambdas: rule.needs.base ? [0.5, 0.5] : undefined,
        stats: { maskFisher: fishers, fullFisher: [(n) => models[1].get(n)!.map(Math.abs), (n) => models[0].get(n)!.map(Math.abs)], gram: [grams(3), grams(5)] },
      });
      for (const slot of slots) {
        const got = merged.get(slot.name)!;
        const want = models[0].get(slot.name)!;
        // Averages return the very same float32 values; base + combined task vectors and linear solves only up to rounding.
        if (!rule.needs.base && !rule.needs.stats.includes('gram')) expect(Array.from(got), `${rule.name} ${slot.name}`).toEqual(Array.from(want));
        else want.forEach((v, e) => expect(got[e]).toBeCloseTo(v, 6));
      }
    }
  });

  it('lambdas (1, 0) return the first model', () => {
    for (const name of ['mask-fisher', 'isotropic']) {
      const merged = mergeEncoders({ slots, models: 2, rule: resolveRule(name), tensor, lambdas: [1, 0], stats: { maskFisher: fishers } });
      for (const slot of slots) expect(Array.from(merged.get(slot.name)!)).toEqual(Array.from(models[0].get(slot.name)!));
    }
  });

  it("mask-fisher weights query rows by their head's Fisher and FFN-in rows by their neuron's", () => {
    const merged = mergeEncoders({ slots, models: 2, rule: resolveRule('mask-fisher'), tensor, stats: { maskFisher: fishers } });
    const q = merged.get('l0.query.weight')!;
    const [a, b] = models.map((m) => m.get('l0.query.weight')!);
    // rows 0-1 are head 0 (Fisher 1 vs 3), rows 2-3 head 1 (3 vs 1)
    expect(q[1]).toBeCloseTo((1 * a[1] + 3 * b[1]) / 4, 6);
    expect(q[9]).toBeCloseTo((3 * a[9] + 1 * b[9]) / 4, 6);
    const bias = merged.get('l0.query.bias')!;
    expect(bias[3]).toBeCloseTo((3 * models[0].get('l0.query.bias')![3] + models[1].get('l0.query.bias')![3]) / 4, 6);
    // layer 1 head Fisher is 0 for both models on head 0: equal split; head 1 is 2 vs 2.
    const q1 = merged.get('l1.query.weight')!;
    const [a1, b1] = models.map((m) => m.get('l1.query.weight')!);
    expect(q1[0]).toBeCloseTo((a1[0] + b1[0]) / 2, 6);
    // ffn_in row 1 of layer 0: neuron Fisher 0 vs 0 -> equal; row 2: 2 vs 2; ffn_in layer 1 row 0: 4 vs 1
    const f1 = merged.get('l1.ffn_in.weight')!;
    const [fa, fb] = models.map((m) => m.get('l1.ffn_in.weight')!);
    expect(f1[2]).toBeCloseTo((4 * fa[2] + 1 * fb[2]) / 5, 6);
  });

  it('mask-fisher weights value, FFN-out, embeddings and pooler by layer means and the universal weight', () => {
    const merged = mergeEncoders({ slots, models: 2, rule: resolveRule('mask-fisher'), tensor, stats: { maskFisher: fishers } });
    // after the zero fix (nodes 0 in both models become 1): A head [1,3 | 1,2] neuron [1,1,2 | 4,0,1]; B head [3,1 | 1,2] neuron [0,1,2 | 1,1,0]
    const headMean = [[2, 1.5], [2, 1.5]];
    const neuronMean = [[4 / 3, 5 / 3], [1, 2 / 3]];
    const universal = [0, 1].map((j) => (headMean[j][0] + neuronMean[j][0] + headMean[j][1] + neuronMean[j][1]) / 2);
    const check = (name: string, wa: number, wb: number) => {
      const [x, y] = models.map((m) => m.get(name)![2]);
      expect(merged.get(name)![2], name).toBeCloseTo((wa * x + wb * y) / (wa + wb), 6);
    };
    check('l1.value.weight', headMean[0][1], headMean[1][1]);
    check('l1.ffn_out.weight', neuronMean[0][1], neuronMean[1][1]);
    check('embeddings.word_embeddings.weight', universal[0], universal[1]);
    check('pooler.dense.bias', universal[0], universal[1]);
    const uniform = mergeEncoders({ slots, models: 2, rule: resolveRule('mask-fisher'), tensor, params: { universal: false }, stats: { maskFisher: fishers } });
    const [x, y] = models.map((m) => m.get('pooler.dense.bias')![1]);
    expect(uniform.get('pooler.dense.bias')![1]).toBeCloseTo((x + y) / 2, 6);
  });

  it('mask-fisher normalize=mass removes a model-wide Fisher scale (an MSE task against cross-entropy ones)', () => {
    const scaled = fisher(Array.from(fishers[0]!.head, (v) => v * 1000), Array.from(fishers[0]!.neuron, (v) => v * 1000));
    const args = { slots, models: 2, rule: resolveRule('mask-fisher'), tensor, stats: { maskFisher: [fishers[0]!, scaled] } };
    const raw = mergeEncoders(args);
    const mass = mergeEncoders({ ...args, params: { normalize: 'mass' } });
    const [x, y] = models.map((m) => m.get('l0.query.weight')![1]!);
    expect(mass.get('l0.query.weight')![1]).toBeCloseTo((x + y) / 2, 6);
    expect(raw.get('l0.query.weight')![1]).toBeCloseTo((x + 1000 * y) / 1001, 6);
  });

  it('task arithmetic adds scaled task vectors to the base', () => {
    const base = randomModel(3);
    const merged = mergeEncoders({ slots, models: 2, rule: resolveRule('task-arithmetic'), tensor, base: (s) => base.get(s.name)!, params: { scale: 0.5 } });
    const name = 'l0.value.weight';
    const [a, b, c] = [models[0], models[1], base].map((m) => m.get(name)![5]);
    expect(merged.get(name)![5]).toBeCloseTo(c + 0.5 * (a - c + (b - c)), 5);
  });

  it('full-fisher weights each element by its Fisher plus epsilon', () => {
    const fa = (n: string) => models[0].get(n)!.map((v) => v * v);
    const fb = (n: string) => models[1].get(n)!.map((v) => Math.abs(v));
    const merged = mergeEncoders({ slots, models: 2, rule: resolveRule('full-fisher'), tensor, stats: { fullFisher: [fa, fb] } });
    const name = 'l1.ffn_out.weight';
    const [x, y] = models.map((m) => m.get(name)![4]);
    const [wx, wy] = [fa(name)[4] + 1e-8, fb(name)[4] + 1e-8];
    expect(merged.get(name)![4]).toBeCloseTo((wx * x + wy * y) / (wx + wy), 6);
  });

  it('full-fisher with l2-normalize divides each model\'s Fisher by its norm over all tensors', () => {
    const fa = (n: string) => models[0].get(n)!.map((v) => v * v + 0.01);
    const fb = (n: string) => fa(n).map((v) => 100 * v);
    const args = { slots, models: 2, rule: resolveRule('full-fisher'), tensor, stats: { fullFisher: [fa, fb] } };
    const plain = mergeEncoders(args);
    const normalized = mergeEncoders({ ...args, params: { 'l2-normalize': true, epsilon: 0 } });
    const name = 'l0.ffn_in.weight';
    const [x, y] = models.map((m) => m.get(name)![3]!);
    // Proportional Fishers become equal after normalisation: a plain average; without it B dominates.
    expect(normalized.get(name)![3]).toBeCloseTo((x + y) / 2, 6);
    expect(plain.get(name)![3]).toBeCloseTo((x + 100 * y) / 101, 5);
  });

  it('rejects unknown methods, wrong lambda counts, unknown or mistyped parameters, and missing inputs', () => {
    expect(() => resolveRule('tie')).toThrow(/unknown merge method 'tie'; expected one of mask-fisher/);
    const rule = resolveRule('isotropic');
    expect(() => mergeEncoders({ slots, models: 2, rule, tensor, lambdas: [1] })).toThrow(/--lambda has 1 values but 2 models/);
    expect(() => mergeEncoders({ slots, models: 2, rule: resolveRule('mask-fisher'), tensor, params: { univrsal: true }, stats: { maskFisher: fishers } })).toThrow(/no parameter 'univrsal'/);
    expect(() => mergeEncoders({ slots, models: 2, rule: resolveRule('mask-fisher'), tensor, params: { universal: 'yes' }, stats: { maskFisher: fishers } })).toThrow(/must be a boolean/);
    expect(() => mergeEncoders({ slots, models: 2, rule: resolveRule('mask-fisher'), tensor })).toThrow(/needs one mask Fisher file per model/);
    expect(() => mergeEncoders({ slots, models: 2, rule: resolveRule('task-arithmetic'), tensor })).toThrow(/needs a base model/);
  });
});
