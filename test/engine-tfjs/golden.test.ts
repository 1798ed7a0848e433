import { afterAll, describe, expect, it } from 'vitest';
import { createTfjsEngine, type TfjsEngine } from '@fisher-merge/engine-tfjs';
import { loadEncoder, toHfTensors, type LoadedModel } from '@fisher-merge/model';
import { golden, modelDir, TASKS, trainBatches, val16Batch } from './golden.ts';

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

/**
 * |actual - expected| <= rel * |expected| + abs * scale (scale: the largest |expected| unless given), so
 * elements above `abs / rel` of the scale are held to `rel` and the rest to an absolute floor.
 */
function expectAllClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rel: number, abs: number, scale = maxAbs(expected)) {
  expect(actual.length, what).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const excess = Math.abs(actual[i]! - expected[i]!) - (rel * Math.abs(expected[i]!) + abs * scale);
    if (excess > worstExcess) [worst, worstExcess] = [i, excess];
  }
  if (worst >= 0) throw new Error(`${what}[${worst}]: ${actual[worst]} vs ${expected[worst]} (rel ${rel}, abs ${abs} of ${scale})`);
}

const loaded = new Map<string, { model: LoadedModel; engine: TfjsEngine }>();
async function open(task: string) {
  if (!loaded.has(task)) {
    const model = await loadEncoder(modelDir(task));
    loaded.set(task, { model, engine: await createTfjsEngine(model.weights) });
  }
  return loaded.get(task)!;
}
afterAll(async () => {
  for (const { engine } of loaded.values()) await engine.dispose();
});

describe.each(TASKS)('%s fixture model', (task) => {
  it('logits of the 16 validation examples match PyTorch float64 (<= 1e-4 abs)', async () => {
    const { engine } = await open(task);
    const logits = await engine.forward(val16Batch(task));
    const want = golden(task, 'val16_inputs_logits').float64('logits_f64');
    expect(logits.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) expect(Math.abs(logits[i]! - want[i]!)).toBeLessThanOrEqual(1e-4);
  });

  it('per-example mask gradients of the first 128 training examples reproduce the golden mask Fisher', async () => {
    const { engine, model } = await open(task);
    const { numLayers: L, numHeads: H, intermediateSize: I } = model.config;
    const f = golden(task, 'mask_fisher');
    const batches = await trainBatches(task, 128, 32);
    expect(batches.map((b) => b.batchSize)).toEqual([32, 32, 32, 32]);
    const head = new Float64Array(L * H);
    const neuron = new Float64Array(L * I);
    const headPerBatch = new Float64Array(4 * L * H);
    const neuronPerBatch = new Float64Array(4 * L * I);
    for (const [k, batch] of batches.entries()) {
      const g = await engine.maskGradients(batch);
      for (let b = 0; b < batch.batchSize; b++) {
        for (let i = 0; i < L * H; i++) {
          const v = g.headGrads[b * L * H + i]!;
          head[i]! += v * v;
          headPerBatch[k * L * H + i]! += v / batch.batchSize;
        }
        for (let i = 0; i < L * I; i++) {
          const v = g.neuronGrads[b * L * I + i]!;
          neuron[i]! += v * v;
          neuronPerBatch[k * L * I + i]! += v / batch.batchSize;
        }
      }
    }
    // Sums of squares: 1e-3 relative above 1e-8 of the largest (measured: <= 5e-6).
    expectAllClose(head, f.float64('head_fisher_per_example'), 'head_fisher_per_example', 1e-3, 1e-11);
    expectAllClose(neuron, f.float64('neuron_fisher_per_example'), 'neuron_fisher_per_example', 1e-3, 1e-11);
    // The batch mean loss's gradient is the mean of the per-example gradients. These are signed means that
    // cancel: float32 per-example gradients leave ~1e-6 of the largest entry as absolute error (measured
    // <= 1.3e-6), so small entries get an absolute floor of 1e-5 of the largest instead of 1e-3 relative.
    expectAllClose(headPerBatch, f.float64('head_grads_per_batch'), 'head_grads_per_batch', 1e-3, 1e-5);
    expectAllClose(neuronPerBatch, f.float64('neuron_grads_per_batch'), 'neuron_grads_per_batch', 1e-3, 1e-5);
  });

  it('empirical full Fisher of the first 32 training examples matches the golden (<= 1e-3 relative)', async () => {
    const { engine, model } = await open(task);
    const [batch] = await trainBatches(task, 32, 32);
    const fisher = toHfTensors(model, await engine.parameterFisher(batch!, 'empirical'));
    const f = golden(task, 'full_fisher');
    const want = new Map<string, Float64Array>();
    for (const [name, t] of Object.entries(fisher)) {
      if (f.has(name)) {
        want.set(name, f.float64(name));
        continue;
      }
      // Sparse tables: the stored rows, every other row exactly zero.
      const ids = f.float64(`${name}.nonzero_row_ids`);
      const rows = f.float64(`${name}.nonzero_rows`);
      const E = t.shape[1]!;
      const dense = new Float64Array(t.data.length);
      ids.forEach((id, r) => dense.set(rows.subarray(r * E, (r + 1) * E), id * E));
      const stored = new Set(ids);
      const got = t.data as Float32Array;
      let nonzeroOutside = 0;
      for (let i = 0; i < got.length; i++) if (got[i] !== 0 && !stored.has(Math.floor(i / E))) nonzeroOutside++;
      expect(nonzeroOutside, `${name}: nonzero entries in rows the golden stores as zero`).toBe(0);
      want.set(name, dense);
    }
    expect([...want.keys()].sort()).toEqual([...new Set(f.names().map((n) => n.replace(/\.nonzero_row(_id)?s$/, '')))].sort());
    // One scale for the whole model: key biases have an exactly zero Fisher (softmax is shift-invariant),
    // which float32 and float64 each round to their own tiny values.
    const scale = Math.max(...[...want.values()].map(maxAbs));
    for (const [name, w] of want) expectAllClose(fisher[name]!.data as Float32Array, w, name, 1e-3, 1e-11, scale);
  });
});
