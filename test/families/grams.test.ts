// RegMean's Gram inputs by role in every family: names from each family's description, no pooler
// statistic where the family has none, and both engines agreeing on the sums over real tokens.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TokenBatch } from '@fisher-merge/core';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';
import { createTfjsEngine } from '@fisher-merge/engine-tfjs';
import { gramInputs } from '@fisher-merge/fisher';
import { describeModel, loadEncoder, type Engine } from '@fisher-merge/model';

const ROOT = 'test/fixtures/families';
/** The layer-0 module whose input query/key/value share, and the pooler's module where the family has one. */
const EXPECTED = {
  roberta: { query: 'encoder.layer.0.attention.self.query', ffnOut: 'encoder.layer.0.output.dense', pooler: undefined },
  distilbert: { query: 'transformer.layer.0.attention.q_lin', ffnOut: 'transformer.layer.0.ffn.lin2', pooler: undefined },
  electra: { query: 'encoder.layer.0.attention.self.query', ffnOut: 'encoder.layer.0.output.dense', pooler: undefined },
  bert_gelu_new: { query: 'encoder.layer.0.attention.self.query', ffnOut: 'encoder.layer.0.output.dense', pooler: 'pooler.dense' },
} as const;

const open: Engine[] = [];
afterAll(async () => {
  for (const e of open) await e.dispose();
});

describe.each(Object.keys(EXPECTED) as (keyof typeof EXPECTED)[])('%s', (name) => {
  it('names its Gram inputs by role, and both engines agree on their sums over the real tokens', async () => {
    const dir = path.join(ROOT, name);
    const info = await describeModel(dir);
    const inputs = gramInputs(info);
    const want = EXPECTED[name];
    const { numLayers: L, hiddenSize: D, intermediateSize: I } = info.config;
    expect(inputs).toHaveLength(4 * L + (want.pooler ? 1 : 0));
    expect(inputs[0]).toEqual({ name: want.query, role: 'query', layer: 0, dim: D });
    expect(inputs[3]).toEqual({ name: want.ffnOut, role: 'ffnOut', layer: 0, dim: I });
    expect(inputs.find((i) => i.role === 'pooler')?.name).toBe(want.pooler);

    const model = await loadEncoder(dir);
    const ref = readSafetensors(path.join(dir, 'reference.safetensors'));
    const ids = (n: string) => Int32Array.from(ref.tensor(n).data as BigInt64Array, Number);
    const [B, T] = ref.info('input_ids').shape as [number, number];
    const batch: TokenBatch = { batchSize: B, seqLen: T, inputIds: ids('input_ids'), attentionMask: ids('attention_mask'), tokenTypeIds: ref.has('token_type_ids') ? ids('token_type_ids') : new Int32Array(B * T) };
    const engines = [await createTfjsEngine(model.weights), await createOnnxEngine(model.weights, { threads: 1 })];
    open.push(...engines);
    const [a, b] = await Promise.all(engines.map((e) => e.inputGrams!(batch)));
    expect(b!.tokens).toBe(batch.attentionMask.reduce((n, m) => n + m, 0));
    const close = (x: Float64Array, y: Float64Array, what: string) => {
      const scale = Math.max(...y.map(Math.abs));
      x.forEach((v, k) => expect(Math.abs(v - y[k]!), `${what}[${k}]`).toBeLessThanOrEqual(1e-5 * scale));
    };
    a!.layers.forEach((layer, l) => (['attention', 'attnOut', 'ffnIn', 'ffnOut'] as const).forEach((k) => close(layer[k], b!.layers[l]![k], `${name} layer ${l} ${k}`)));
    close(a!.head, b!.head, `${name} head input`);
  });
});
