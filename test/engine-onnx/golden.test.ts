// The fixture models against the PyTorch goldens: validation logits, per-example and per-batch mask
// gradients on the first 128 training examples, and the full empirical Fisher of the first 32.
import { afterAll, describe, expect, it } from 'vitest';
import { lastValueFrom, map, toArray } from 'rxjs';
import type { TokenBatch } from '@fisher-merge/core';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { loadEncoder, toHfTensors } from '@fisher-merge/model';
import { glueTask, loadTokenizer, padBatches, parquetSource, taskColumns, tokenize } from '@fisher-merge/data';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';

const TASKS = ['sst2', 'cola', 'rte', 'stsb'];
const golden = (task: string, file: string) => readSafetensors(`test/fixtures/golden/${task}/${file}.safetensors`);

/**
 * |got - want| <= rel * |want| + 1e-6 * max|want|. The absolute floor is float32 resolution: entries that
 * are sums of cancelling terms (batch-mean gradients, say) cannot be relatively exact below ~1e-6 of the
 * largest. Measured worst cases on the fixtures: 1.5e-6 of the max, 1.1e-5 relative above 1e-5 of it.
 */
function expectRelClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rel = 1e-3): void {
  expect(got.length, what).toBe(want.length);
  let max = 0;
  for (let i = 0; i < want.length; i++) max = Math.max(max, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    const tol = rel * Math.abs(want[i]) + 1e-6 * max;
    if (!(Math.abs(got[i] - want[i]) <= tol)) expect.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (max ${max})`);
  }
}

/** The first `n` training examples, tokenized by the data plane, in batches of `batchSize` padded to their longest. */
async function trainBatches(task: string, n: number, batchSize: number, padTokenId: number): Promise<TokenBatch[]> {
  const spec = glueTask(task);
  const tokenizer = await loadTokenizer(`data/models/${task}`);
  return lastValueFrom(
    parquetSource(`data/glue/${task}/train-00000-of-00001.parquet`, { columns: taskColumns(spec), sample: { kind: 'first', n } }).pipe(
      tokenize(tokenizer, spec),
      padBatches({ batchSize, padTokenId }),
      map((b) => b.tokens),
      toArray(),
    ),
  );
}

for (const task of TASKS) {
  describe(`onnx engine on the ${task} fixture model`, async () => {
    const model = await loadEncoder(`data/models/${task}`);
    const engine = await createOnnxEngine(model.weights);
    afterAll(() => engine.dispose());
    const { numLayers: L, numHeads: H, intermediateSize: I } = model.config;

    it('reproduces the float64 logits of the first 16 validation examples', async () => {
      const g = golden(task, 'val16_inputs_logits');
      const int32 = (name: string) => Int32Array.from(g.tensor(name).data as BigInt64Array, Number);
      const [B, T] = g.info('input_ids').shape;
      const batch: TokenBatch = { batchSize: B, seqLen: T, inputIds: int32('input_ids'), attentionMask: int32('attention_mask'), tokenTypeIds: int32('token_type_ids') };
      const logits = await engine.forward(batch);
      const want = g.float64('logits_f64');
      expect(logits.length).toBe(want.length);
      for (let i = 0; i < want.length; i++) expect(Math.abs(logits[i] - want[i]), `logit ${i}`).toBeLessThanOrEqual(1e-4);
    });

    it('reproduces per-example and per-batch mask gradients of the first 128 training examples', async () => {
      const g = golden(task, 'mask_fisher');
      const batches = await trainBatches(task, 128, 32, model.config.padTokenId);
      expect(batches.map((b) => b.batchSize)).toEqual([32, 32, 32, 32]);
      const fisher = { head: new Float64Array(L * H), neuron: new Float64Array(L * I) };
      const batchFisher = { head: new Float64Array(L * H), neuron: new Float64Array(L * I) };
      for (const [k, batch] of batches.entries()) {
        const m = await engine.maskGradients(batch);
        for (const [key, grads, size] of [['head', m.headGrads, L * H], ['neuron', m.neuronGrads, L * I]] as const) {
          const mean = new Float64Array(size);
          for (let b = 0; b < batch.batchSize; b++) {
            for (let j = 0; j < size; j++) {
              const v = grads[b * size + j];
              fisher[key][j] += v * v;
              mean[j] += v / batch.batchSize;
            }
          }
          expectRelClose(mean, g.float64(`${key}_grads_per_batch`).subarray(k * size, (k + 1) * size), `${key} grads of batch ${k}`);
          for (let j = 0; j < size; j++) batchFisher[key][j] += mean[j] * mean[j];
        }
      }
      expectRelClose(fisher.head, g.float64('head_fisher_per_example'), 'head_fisher_per_example');
      expectRelClose(fisher.neuron, g.float64('neuron_fisher_per_example'), 'neuron_fisher_per_example');
      expectRelClose(batchFisher.head, g.float64('head_fisher'), 'head_fisher');
      expectRelClose(batchFisher.neuron, g.float64('neuron_fisher'), 'neuron_fisher');
    });

    it('reproduces the full empirical Fisher of the first 32 training examples', async () => {
      const g = golden(task, 'full_fisher');
      const [batch] = await trainBatches(task, 32, 32, model.config.padTokenId);
      const fisher = toHfTensors(model, await engine.parameterFisher(batch, 'empirical'));
      const globalMax = Math.max(...Object.values(fisher).map((t) => (t.data as Float32Array).reduce((m, v) => Math.max(m, v), 0)));
      for (const [name, t] of Object.entries(fisher)) {
        const got = t.data as Float32Array;
        if (name.endsWith('key.bias')) {
          // Softmax ignores a shift shared by all keys: this Fisher is zero up to rounding (golden ~1e-33).
          for (const v of got) expect(v, name).toBeLessThanOrEqual(1e-12 * globalMax);
          continue;
        }
        if (g.has(`${name}.nonzero_row_ids`)) {
          // Sparse golden: listed rows must match, every other row must be exactly zero.
          const ids = g.tensor(`${name}.nonzero_row_ids`).data as BigInt64Array;
          const rows = g.float32(`${name}.nonzero_rows`);
          const E = t.shape[1];
          const dense = new Float32Array(got.length);
          ids.forEach((id, r) => dense.set(rows.subarray(r * E, (r + 1) * E), Number(id) * E));
          expectRelClose(got, dense, name);
        } else expectRelClose(got, g.float32(name), name);
      }
    });
  });
}
