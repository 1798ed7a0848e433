import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { createTfjsEngine, initTfjsBackend, tfjsBackend } from '@fisher-merge/engine-tfjs';
import { randomBatch, randomConfig, randomWeights, rng } from './random.ts';

const resolves = (spec: string) => {
  try {
    createRequire(import.meta.url).resolve(spec);
    return true;
  } catch {
    return false;
  }
};

describe('backend selection', () => {
  it('prefers native TensorFlow when installed, else wasm', async () => {
    const native = resolves('@tensorflow/tfjs-node-gpu') || resolves('@tensorflow/tfjs-node');
    const name = await initTfjsBackend();
    expect(name).toBe(native ? 'tensorflow' : 'wasm');
    expect(tfjsBackend()).toBe(name);
  });

  it('gives native TensorFlow when asked only if tfjs-node or tfjs-node-gpu is installed, and refuses it otherwise', async () => {
    const native = resolves('@tensorflow/tfjs-node-gpu') || resolves('@tensorflow/tfjs-node');
    const asked = initTfjsBackend('tensorflow');
    if (native) {
      expect(await asked).toBe('tensorflow');
      expect(tfjsBackend()).toBe('tensorflow');
    } else {
      await expect(asked).rejects.toThrow("tfjs backend 'tensorflow' is not available");
      expect(tfjsBackend()).not.toBe('tensorflow');
    }
  });

  it('engines on the wasm and cpu backends agree, each keeping its backend', async () => {
    const config = randomConfig(rng(41));
    const weights = randomWeights(config, 41);
    const batch = randomBatch(config, 3, 6, 42);
    const wasm = await createTfjsEngine(weights, { backend: 'wasm' });
    const cpu = await createTfjsEngine(weights, { backend: 'cpu' });
    expect([wasm.backend, cpu.backend]).toEqual(['wasm', 'cpu']);
    const a = await wasm.maskGradients(batch);
    expect(tf.getBackend()).toBe('wasm');
    const b = await cpu.maskGradients(batch);
    expect(tf.getBackend()).toBe('cpu');
    const close = (x: Float32Array, y: Float32Array) => {
      const scale = Math.max(...Array.from(y, Math.abs));
      x.forEach((v, i) => expect(Math.abs(v - y[i]!)).toBeLessThanOrEqual(1e-5 * scale));
    };
    close(a.logits, b.logits);
    close(a.headGrads, b.headGrads);
    close(a.neuronGrads, b.neuronGrads);
    await wasm.dispose();
    await cpu.dispose();
  });
});
