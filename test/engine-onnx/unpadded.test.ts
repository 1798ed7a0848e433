// The engine computes real tokens only: a padded batch gives each row what that row gives alone,
// unpadded, whatever the padding width; Fisher chunks sorted by length sum to the same statistics.
import { afterAll, describe, expect, it } from 'vitest';
import type { TokenBatch } from '@fisher-merge/core';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';
import { flattenWeights, type EncoderConfig } from '@fisher-merge/model';
import { expectClose, maxAbs } from './close.ts';
import { bertConfig, paddedBatch, randomWeights } from './random.ts';

const config: EncoderConfig = bertConfig({ numLayers: 2, hiddenSize: 16, numHeads: 4, intermediateSize: 24, vocabSize: 50, maxPositions: 32, numLabels: 3 });
const LENGTHS = [5, 9, 2, 7];

const batch = (lengths: number[], width: number, seed: number) => paddedBatch(config, lengths, width, seed);

/** Row `b` of a batch on its own, cut to its real tokens. */
function alone(x: TokenBatch, b: number, len: number): TokenBatch {
  const row = (a: Int32Array) => a.slice(b * x.seqLen, b * x.seqLen + len);
  return { batchSize: 1, seqLen: len, inputIds: row(x.inputIds), attentionMask: row(x.attentionMask), tokenTypeIds: row(x.tokenTypeIds), labels: x.labels!.slice(b, b + 1) };
}

describe('onnx engine on padded batches', async () => {
  const engine = await createOnnxEngine(randomWeights(config, 3, undefined, 0.3), { threads: 1 });
  afterAll(() => engine.dispose());
  const { numLayers: L, numHeads: H, intermediateSize: I, numLabels: C } = config;

  it.each([9, 14])('gives every row of a batch padded to %i what the row gives alone', async (width) => {
    const padded = batch(LENGTHS, width, 5);
    const all = await engine.maskGradients(padded);
    expectClose(await engine.forward(padded), all.logits, 'forward logits vs mask-pass logits');
    for (const [b, len] of LENGTHS.entries()) {
      const one = await engine.maskGradients(alone(padded, b, len));
      expectClose(all.logits.subarray(b * C, (b + 1) * C), one.logits, `logits of row ${b}`);
      expectClose(all.losses.subarray(b, b + 1), one.losses, `loss of row ${b}`);
      expectClose(all.headGrads.subarray(b * L * H, (b + 1) * L * H), one.headGrads, `head grads of row ${b}`);
      expectClose(all.neuronGrads.subarray(b * L * I, (b + 1) * L * I), one.neuronGrads, `neuron grads of row ${b}`);
    }
  });

  it('sums the parameter Fisher of rows of different lengths to the sum of each row alone', async () => {
    const padded = batch(LENGTHS, 12, 6);
    const got = flattenWeights(await engine.parameterFisher(padded, 'empirical'));
    const want = got.map((a) => new Float64Array(a.length));
    for (const [b, len] of LENGTHS.entries()) {
      flattenWeights(await engine.parameterFisher(alone(padded, b, len), 'empirical')).forEach((a, k) => a.forEach((v, i) => (want[k][i] += v)));
    }
    // Key biases have an exactly zero Fisher (softmax is shift-invariant): compare against the model's largest.
    const scale = Math.max(...want.map(maxAbs));
    got.forEach((a, k) => expectClose(a, want[k], `parameter ${k}`, Math.max(maxAbs(want[k]), 1e-3 * scale)));
  });

  it('refuses a row whose first token is padding', async () => {
    const left = batch([3, 4], 4, 7);
    left.attentionMask.set([0, 1, 1, 1], 0);
    await expect(engine.forward(left)).rejects.toThrow(/row 0 of the batch starts with a padding token/);
  });
});
