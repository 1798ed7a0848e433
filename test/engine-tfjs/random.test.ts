import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { createTfjsEngine, tfjsBackend, type TfjsEngine } from '@fisher-merge/engine-tfjs';
import { mapWeights, type EncoderConfig } from '@fisher-merge/model';
import { onesMasks, refLogits, refLoss, toF64, type Masks, type W64 } from './reference.ts';
import { randomBatch, randomConfig, randomWeights, rng } from './random.ts';

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string) {
  expect(actual.length, what).toBe(expected.length);
  const tol = rel * Math.max(maxAbs(expected), 1e-6);
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i]! - expected[i]!) <= tol)) throw new Error(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (tol ${tol})`);
  }
}

const softmax = (z: number[]) => {
  const m = Math.max(...z);
  const e = z.map((x) => Math.exp(x - m));
  const s = e.reduce((a, x) => a + x, 0);
  return e.map((x) => x / s);
};

/** Central difference of f at x[i], in float64. */
function central(x: Float64Array, i: number, f: () => number[]): number[] {
  const h = 1e-5 * Math.max(1, Math.abs(x[i]!));
  const keep = x[i]!;
  x[i] = keep + h;
  const up = f();
  x[i] = keep - h;
  const down = f();
  x[i] = keep;
  return up.map((u, k) => (u - down[k]!) / (2 * h));
}

const SEEDS = [11, 12, 13, 14, 15, 16];
const engines = new Map<number, TfjsEngine>();
afterAll(async () => {
  for (const e of engines.values()) await e.dispose();
});

describe.each(SEEDS)('random encoder %i', (seed) => {
  const config: EncoderConfig = randomConfig(rng(seed));
  const weights = randomWeights(config, seed);
  const w64: W64 = toF64(weights);
  const B = 4;
  const batch = randomBatch(config, B, 7, seed + 100);
  const labels = batch.labels!;
  const getEngine = async () => {
    if (!engines.has(seed)) engines.set(seed, await createTfjsEngine(weights));
    return engines.get(seed)!;
  };

  it(`logits match a float64 oracle (${config.hiddenAct}, ${config.positionStyle}, E=${config.embeddingSize}, types=${config.typeVocabSize}, labels=${config.numLabels})`, async () => {
    const engine = await getEngine();
    expect(engine.backend).toBe(tfjsBackend());
    const logits = await engine.forward(batch);
    const ref = Array.from({ length: B }, (_, b) => refLogits(w64, batch, b)).flat();
    expectClose(logits, ref, 1e-5, 'logits');
  });

  it('per-example mask gradients match float64 finite differences', async () => {
    const engine = await getEngine();
    const g = await engine.maskGradients(batch);
    const { numLayers: L, numHeads: H, intermediateSize: I } = config;
    expect(g.headGrads.length).toBe(B * L * H);
    expect(g.neuronGrads.length).toBe(B * L * I);
    const refHead = new Float64Array(B * L * H);
    const refNeuron = new Float64Array(B * L * I);
    const refLosses: number[] = [];
    for (let b = 0; b < B; b++) {
      const m: Masks = onesMasks(config);
      const loss = () => [refLoss(config, refLogits(w64, batch, b, m), labels[b]!)];
      refLosses.push(loss()[0]!);
      for (let i = 0; i < L * H; i++) refHead[b * L * H + i] = central(m.head, i, loss)[0]!;
      for (let i = 0; i < L * I; i++) refNeuron[b * L * I + i] = central(m.neuron, i, loss)[0]!;
    }
    expectClose(g.losses, refLosses, 1e-5, 'losses');
    expectClose(g.logits, await engine.forward(batch), 1e-6, 'logits of maskGradients');
    // Per example, so each example's block is compared on its own scale.
    for (let b = 0; b < B; b++) {
      expectClose(g.headGrads.subarray(b * L * H, (b + 1) * L * H), refHead.subarray(b * L * H, (b + 1) * L * H), 1e-3, `head grads of example ${b}`);
      expectClose(g.neuronGrads.subarray(b * L * I, (b + 1) * L * I), refNeuron.subarray(b * L * I, (b + 1) * L * I), 1e-3, `neuron grads of example ${b}`);
    }
  });

  it.each(['empirical', 'expected'] as const)('%s parameter Fisher matches float64 finite differences on sampled entries', async (mode) => {
    const engine = await getEngine();
    const fisher = await engine.parameterFisher(batch, mode);
    const r = rng(seed * 7);
    const used = new Set(Array.from(batch.inputIds));
    const actual = mapWeights(fisher, (a) => a);
    const checks: { name: string; got: number; want: number }[] = [];
    const fisherTensors: { name: string; data: Float32Array }[] = [];
    mapWeights(actual, (a, _s, name) => fisherTensors.push({ name, data: a }));
    const params: { name: string; data: Float64Array }[] = [];
    mapWeights(w64, (a, _s, name) => params.push({ name, data: a }));
    params.forEach(({ name, data }, k) => {
      const got = fisherTensors[k]!;
      expect(got.name).toBe(name);
      expect(got.data.length).toBe(data.length);
      const E = config.embeddingSize;
      let idx = [0, 1, 2].map(() => Math.floor(r() * data.length));
      if (name === 'embeddings.word') {
        const unused = Array.from({ length: config.vocabSize }, (_, i) => i).filter((i) => !used.has(i));
        // Rows of ids the batch never uses get exactly zero.
        for (const id of unused) for (let e = 0; e < E; e++) expect(got.data[id * E + e]).toBe(0);
        idx = [...used].slice(0, 3).map((id) => id * E + Math.floor(r() * E));
      }
      for (const i of idx) {
        let want = 0;
        for (let b = 0; b < B; b++) {
          const logits = refLogits(w64, batch, b);
          if (mode === 'empirical' || config.problemType === 'regression') {
            want += central(data, i, () => [refLoss(config, refLogits(w64, batch, b), labels[b]!)])[0]! ** 2;
          } else {
            const p = softmax(logits);
            const d = central(data, i, () => {
              const z = refLogits(w64, batch, b);
              return z.map((_, y) => refLoss(config, z, y));
            });
            want += d.reduce((s, dy, y) => s + p[y]! * dy * dy, 0);
          }
        }
        checks.push({ name: `${name}[${i}]`, got: got.data[i]!, want });
      }
    });
    const scale = Math.max(...checks.map((c) => c.want));
    for (const c of checks) {
      if (!(Math.abs(c.got - c.want) <= 2e-3 * Math.abs(c.want) + 1e-5 * scale)) throw new Error(`${c.name}: ${c.got} vs ${c.want}`);
    }
  });
});

describe('memory', () => {
  it('keeps the number of live tensors flat over repeated calls', async () => {
    const config = randomConfig(rng(3));
    const engine = await createTfjsEngine(randomWeights(config, 3));
    const batch = randomBatch(config, 3, 6, 5);
    await engine.forward(batch);
    await engine.maskGradients(batch);
    await engine.parameterFisher(batch, 'expected');
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      await engine.forward(batch);
      await engine.maskGradients(batch);
      await engine.parameterFisher(batch, 'empirical');
      await engine.parameterFisher(batch, 'expected');
    }
    expect(tf.memory().numTensors).toBe(before);
    await engine.dispose();
    expect(tf.memory().numTensors).toBeLessThan(before);
    await expect(engine.forward(batch)).rejects.toThrow(/disposed/);
  });

  it('rejects ids outside the embedding tables instead of reading garbage', async () => {
    const config = randomConfig(rng(4), { maxPositions: 6 });
    const engine = await createTfjsEngine(randomWeights(config, 4));
    const before = tf.memory().numTensors;
    const batch = randomBatch(config, 2, 5, 6);
    batch.inputIds[3] = config.vocabSize;
    await expect(engine.forward(batch)).rejects.toThrow(/token id 40/);
    await expect(engine.maskGradients(randomBatch(config, 2, 7, 6))).rejects.toThrow(/position id/);
    expect(tf.memory().numTensors).toBe(before);
    await engine.dispose();
  });
});
