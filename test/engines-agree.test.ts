// The tfjs autodiff engine and the ONNX engine (hand-derived backward) on the same random models and inputs.
import { afterAll, describe, expect, it } from 'vitest';
import type { Engine } from '@fisher-merge/model';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';
import { createTfjsEngine } from '@fisher-merge/engine-tfjs';
import { flattenWeights, mapWeights } from '@fisher-merge/model';
import { randomBatch, randomConfig, randomWeights, rng } from './engine-tfjs/random.ts';

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

/** Element-wise agreement within `rel` of the largest magnitude of either. */
function expectAgree(a: ArrayLike<number>, b: ArrayLike<number>, rel: number, what: string) {
  expect(a.length, what).toBe(b.length);
  const tol = rel * Math.max(maxAbs(a), maxAbs(b), 1e-12);
  for (let i = 0; i < a.length; i++) {
    if (!(Math.abs(a[i]! - b[i]!) <= tol)) throw new Error(`${what}[${i}]: tfjs ${a[i]} vs onnx ${b[i]} (tol ${tol})`);
  }
}

const open: Engine[] = [];
afterAll(async () => {
  for (const e of open) await e.dispose();
});

describe.each([21, 22, 23, 24, 25])('random model %i', (seed) => {
  const config = randomConfig(rng(seed));
  const weights = randomWeights(config, seed);
  // Trailing padding of random length, a batch longer than some examples.
  const batch = randomBatch(config, 5, 9, seed + 1);
  const engines = (async () => {
    const pair = [await createTfjsEngine(weights), await createOnnxEngine(weights, { threads: 1 })] as const;
    open.push(...pair);
    return pair;
  })();

  it(`logits, losses and per-example mask gradients agree (${config.hiddenAct}, ${config.positionStyle}, E=${config.embeddingSize}, types=${config.typeVocabSize}, labels=${config.numLabels})`, async () => {
    const [tfjs, onnx] = await engines;
    expectAgree(await tfjs.forward(batch), await onnx.forward(batch), 1e-5, 'forward logits');
    const a = await tfjs.maskGradients(batch);
    const b = await onnx.maskGradients(batch);
    expectAgree(a.logits, b.logits, 1e-5, 'logits');
    expectAgree(a.losses, b.losses, 1e-5, 'losses');
    const { numLayers: L, numHeads: H, intermediateSize: I } = config;
    for (let e = 0; e < batch.batchSize; e++) {
      expectAgree(a.headGrads.subarray(e * L * H, (e + 1) * L * H), b.headGrads.subarray(e * L * H, (e + 1) * L * H), 1e-4, `head grads of example ${e}`);
      expectAgree(a.neuronGrads.subarray(e * L * I, (e + 1) * L * I), b.neuronGrads.subarray(e * L * I, (e + 1) * L * I), 1e-4, `neuron grads of example ${e}`);
    }
  });

  it.each(['empirical', 'expected'] as const)('%s parameter Fisher agrees', async (mode) => {
    const [tfjs, onnx] = await engines;
    const a = await tfjs.parameterFisher(batch, mode);
    const b = flattenWeights(await onnx.parameterFisher(batch, mode));
    // 1e-3 relative, with a floor of 1e-7 of the model's largest entry: key biases have an exactly zero
    // Fisher (softmax is shift-invariant) that each engine rounds to its own tiny value.
    const scale = Math.max(...b.map(maxAbs));
    let k = 0;
    mapWeights(a, (x, _shape, name) => {
      const y = b[k++]!;
      expect(x.length, name).toBe(y.length);
      for (let i = 0; i < x.length; i++) {
        if (!(Math.abs(x[i]! - y[i]!) <= 1e-3 * Math.abs(y[i]!) + 1e-7 * scale)) throw new Error(`${name}[${i}]: tfjs ${x[i]} vs onnx ${y[i]}`);
      }
    });
    expect(k).toBe(b.length);
  });
});

describe.each([31, 32, 33])('input Grams of random model %i (RegMean)', (seed) => {
  const config = randomConfig(rng(seed));
  const weights = randomWeights(config, seed);
  const batch = randomBatch(config, 4, 9, seed + 1);

  it('agree between tfjs (host float64 sums over the real tokens) and onnx (in-graph float64 Gemm over the packed tokens)', async () => {
    const tfjs = await createTfjsEngine(weights);
    const onnx = await createOnnxEngine(weights, { threads: 1 });
    open.push(tfjs, onnx);
    const a = await tfjs.inputGrams!(batch);
    const b = await onnx.inputGrams!(batch);
    const real = batch.attentionMask.reduce((n, m) => n + m, 0);
    expect([a.tokens, a.rows]).toEqual([real, batch.batchSize]);
    expect([b.tokens, b.rows]).toEqual([real, batch.batchSize]);
    expect(b.layers).toHaveLength(config.numLayers);
    a.layers.forEach((layer, l) => {
      for (const input of ['attention', 'attnOut', 'ffnIn', 'ffnOut'] as const) {
        const width = input === 'ffnOut' ? config.intermediateSize : config.hiddenSize;
        expect(b.layers[l]![input].length, `${input} ${l}`).toBe(width * width);
        expectAgree(layer[input], b.layers[l]![input], 1e-5, `layer ${l} ${input}`);
      }
    });
    expectAgree(a.head, b.head, 1e-5, 'head input');
  });
});
