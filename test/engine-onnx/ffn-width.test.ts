// The graph widens FFN activations whose rows would be a multiple of 4 KiB (ffnWidth). A model of such a
// width must give what the same model gives with one more, all-zero neuron, which the graph leaves as it is.
import { afterAll, describe, expect, it } from 'vitest';
import { buildGraph, createOnnxEngine, ffnWidth } from '@fisher-merge/engine-onnx';
import { flattenWeights, type EncoderWeights, type Linear } from '@fisher-merge/model';
import { expectClose } from './close.ts';
import { bertConfig, paddedBatch, randomWeights } from './random.ts';

const I = 1024, D = 16;
const config = bertConfig({ numLayers: 2, hiddenSize: D, numHeads: 2, intermediateSize: I, vocabSize: 40, maxPositions: 16, numLabels: 3 });
const weights = randomWeights(config, 21, undefined, 0.2);

/** The model with neuron I added to every FFN: zero input row, zero bias, zero output column. */
function withZeroNeuron(w: EncoderWeights): EncoderWeights {
  const ffnIn = (l: Linear): Linear => ({ weight: Float32Array.from([...l.weight, ...new Array<number>(D).fill(0)]), bias: Float32Array.from([...l.bias, 0]), outFeatures: I + 1, inFeatures: D });
  const ffnOut = (l: Linear): Linear => {
    const weight = new Float32Array(D * (I + 1));
    for (let o = 0; o < D; o++) weight.set(l.weight.subarray(o * I, (o + 1) * I), o * (I + 1));
    return { weight, bias: l.bias, outFeatures: D, inFeatures: I + 1 };
  };
  return { ...w, config: { ...w.config, intermediateSize: I + 1 }, layers: w.layers.map((l) => ({ ...l, ffnIn: ffnIn(l.ffnIn), ffnOut: ffnOut(l.ffnOut) })) };
}

/** `a` without the last entry of each row of `width`: neuron I's, from rows over I + 1 neurons. */
const withoutLast = (a: ArrayLike<number>, width: number) => Array.from(a).filter((_, i) => i % width !== width - 1);

describe('FFN widths that are a multiple of 1024', async () => {
  const wide = await createOnnxEngine(weights, { threads: 1 });
  const plain = await createOnnxEngine(withZeroNeuron(weights), { threads: 1 });
  afterAll(async () => (await wide.dispose(), await plain.dispose()));
  const batch = paddedBatch(config, [7, 3, 5], 7, 4);

  it('are widened in the graph, and only they', () => {
    expect(ffnWidth(I)).toBeGreaterThan(I);
    expect(ffnWidth(I + 1)).toBe(I + 1);
    const widened = buildGraph(weights, 'mask').weights.get('param:layers.1.ffnOut.weight')!;
    expect(widened.dims).toEqual([D, ffnWidth(I)]);
    // Built once per layer, whatever the number of graph kinds.
    expect(buildGraph(weights, 'forward').weights.get('param:layers.1.ffnOut.weight')!.data).toBe(widened.data);
  });

  it('give the logits, losses and mask gradients of the unwidened model, at the model width', async () => {
    const got = await wide.maskGradients(batch);
    const want = await plain.maskGradients(batch);
    expectClose(await wide.forward(batch), await plain.forward(batch), 'forward logits');
    expectClose(got.logits, want.logits, 'logits');
    expectClose(got.losses, want.losses, 'losses');
    expectClose(got.headGrads, want.headGrads, 'head grads');
    expectClose(got.neuronGrads, withoutLast(want.neuronGrads, I + 1), 'neuron grads');
  });

  it('give the parameter Fisher of the unwidened model, at the model shapes', async () => {
    const got = await wide.parameterFisher(batch, 'empirical');
    const want = await plain.parameterFisher(batch, 'empirical');
    const cutFfn = (w: EncoderWeights): EncoderWeights => ({
      ...w,
      layers: w.layers.map((l) => ({
        ...l,
        ffnIn: { ...l.ffnIn, weight: l.ffnIn.weight.slice(0, I * D), bias: l.ffnIn.bias.slice(0, I) },
        ffnOut: { ...l.ffnOut, weight: Float32Array.from(withoutLast(l.ffnOut.weight, I + 1)) },
      })),
    });
    const wantCut = flattenWeights(cutFfn(want));
    flattenWeights(got).forEach((a, k) => expectClose(a, wantCut[k], `parameter ${k}`));
  });
});
