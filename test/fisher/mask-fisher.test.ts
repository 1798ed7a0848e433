import { describe, expect, it } from 'vitest';
import type { TokenBatch } from '@fisher-merge/core';
import { addMaskGradients, addStats, decayStats, emptyMaskFisher, type FisherMode } from '@fisher-merge/fisher';
import type { MaskGradients } from '@fisher-merge/model';

const shape = { numLayers: 2, numHeads: 3, intermediateSize: 4 };

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) - 0.5;
}

function fakeBatch(size: number, seed: number): { batch: TokenBatch; grads: MaskGradients } {
  const r = rng(seed);
  const T = 5;
  const inputIds = Int32Array.from({ length: size * T }, () => Math.floor((r() + 0.5) * 1000));
  return {
    batch: { batchSize: size, seqLen: T, inputIds, attentionMask: new Int32Array(size * T).fill(1), tokenTypeIds: new Int32Array(size * T), labels: Float32Array.from({ length: size }, (_, i) => i % 2) },
    grads: {
      logits: new Float32Array(size * 2),
      losses: new Float32Array(size),
      headGrads: Float32Array.from({ length: size * 6 }, r),
      neuronGrads: Float32Array.from({ length: size * 8 }, r),
    },
  };
}

const start = (mode: FisherMode) => emptyMaskFisher(shape, { mode, batchSize: 4, task: 't', modelFingerprint: 'm' });

describe('mask Fisher statistics', () => {
  it('example mode sums squared per-example gradients; batch mode squares the mean gradient', () => {
    const { batch, grads } = fakeBatch(4, 1);
    const ex = addMaskGradients(start('example'), batch, grads);
    const bm = addMaskGradients(start('batch'), batch, grads);
    let sq = 0, mean = 0;
    for (let b = 0; b < 4; b++) {
      sq += grads.headGrads[b * 6] ** 2;
      mean += grads.headGrads[b * 6] / 4;
    }
    expect(ex.head[0]).toBeCloseTo(sq, 6);
    expect(bm.head[0]).toBeCloseTo(mean * mean, 6);
    expect(ex.examples).toBe(4);
    expect(ex.batches).toBe(1);
  });

  it('two halves added equal the whole, fingerprints included', () => {
    for (const mode of ['batch', 'example'] as const) {
      const batches = [1, 2, 3, 4].map((s) => fakeBatch(4, s));
      const whole = batches.reduce((st, { batch, grads }) => addMaskGradients(st, batch, grads), start(mode));
      const first = batches.slice(0, 2).reduce((st, { batch, grads }) => addMaskGradients(st, batch, grads), start(mode));
      const second = batches.slice(2).reduce((st, { batch, grads }) => addMaskGradients(st, batch, grads), start(mode));
      const sum = addStats(first, second);
      for (let k = 0; k < whole.head.length; k++) expect(sum.head[k]).toBeCloseTo(whole.head[k], 12);
      for (let k = 0; k < whole.neuron.length; k++) expect(sum.neuron[k]).toBeCloseTo(whole.neuron[k], 12);
      expect(sum.examples).toBe(16);
      expect(sum.batches).toBe(4);
      expect(sum.dataFingerprint).toBe(whole.dataFingerprint);
      expect(first.dataFingerprint).not.toBe(second.dataFingerprint);
    }
  });

  it('the data fingerprint ignores padding but not content', () => {
    const { batch, grads } = fakeBatch(2, 7);
    const padded: TokenBatch = {
      ...batch,
      seqLen: 6,
      inputIds: Int32Array.from({ length: 12 }, (_, i) => (i % 6 === 5 ? 0 : batch.inputIds[Math.floor(i / 6) * 5 + (i % 6)])),
      attentionMask: Int32Array.from({ length: 12 }, (_, i) => (i % 6 === 5 ? 0 : 1)),
      tokenTypeIds: new Int32Array(12),
    };
    const a = addMaskGradients(start('example'), batch, grads);
    const b = addMaskGradients(start('example'), padded, grads);
    expect(b.dataFingerprint).toBe(a.dataFingerprint);
    const changed = { ...batch, inputIds: batch.inputIds.map((v, i) => (i === 0 ? v + 1 : v)) };
    expect(addMaskGradients(start('example'), changed, grads).dataFingerprint).not.toBe(a.dataFingerprint);
  });

  it('refuses to add statistics of different models or modes', () => {
    const a = start('batch');
    expect(() => addStats(a, { ...a, modelFingerprint: 'other' })).toThrow(/modelFingerprint/);
    expect(() => addStats(a, start('example'))).toThrow(/mode/);
  });

  it('decay scales mass and counts', () => {
    const { batch, grads } = fakeBatch(4, 3);
    const s = addMaskGradients(start('example'), batch, grads);
    const d = decayStats(s, 0.5);
    expect(d.head[1]).toBeCloseTo(s.head[1] / 2, 12);
    expect(d.examples).toBe(2);
  });
});
