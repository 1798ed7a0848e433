// Gradient correctness of the generated graphs against central finite differences of a float64 reference,
// on random tiny configs covering padding, every activation, absent token types and an embedding projection.
import { afterAll, describe, expect, it } from 'vitest';
import type { TokenBatch } from '@fisher-merge/core';
import { mapWeights, positionIds, type Activation, type EncoderConfig, type EncoderWeights } from '@fisher-merge/model';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';
import { classicParameterFisher } from '@fisher-merge/fisher';
import { bertConfig, paddedBatch, randomWeights } from './random.ts';
import { params, reference, type Example, type Masks, type Params } from './reference.ts';

interface Case {
  name: string;
  config: EncoderConfig;
  head?: { out: number; activation: Activation }[];
}

const tiny = { numLayers: 2, hiddenSize: 8, numHeads: 2, intermediateSize: 12, vocabSize: 30, maxPositions: 16 };
const cases: Case[] = [
  { name: 'bert gelu, token types, pooler, 3 classes', config: bertConfig({ ...tiny, numLabels: 3 }) },
  {
    name: 'relu, no token types, embedding projection, padding-offset positions',
    config: bertConfig({ ...tiny, hiddenAct: 'relu', typeVocabSize: 0, embeddingSize: 6, padTokenId: 1, positionStyle: 'padding-offset' }),
    head: [
      { out: 8, activation: 'relu' },
      { out: 2, activation: 'none' },
    ],
  },
  { name: 'gelu_new regression', config: bertConfig({ ...tiny, hiddenAct: 'gelu_new', numLabels: 1, problemType: 'regression', numLayers: 3 }) },
];

/** Three examples of lengths 6, 4, 3 padded to 6, with a repeated token in the first. */
function makeBatch(c: EncoderConfig, seed: number): TokenBatch {
  const batch = paddedBatch(c, [6, 4, 3], 6, seed, (b, r) => (c.problemType === 'regression' ? r() * 2 : b % c.numLabels));
  batch.inputIds[3] = batch.inputIds[1]; // a token repeated within one example
  return batch;
}

function examples(c: EncoderConfig, b: TokenBatch): Example[] {
  const pos = positionIds(c, b);
  const T = b.seqLen;
  return Array.from({ length: b.batchSize }, (_, i) => {
    const row = <A extends ArrayLike<number>>(a: A) => Array.from({ length: T }, (_, t) => a[i * T + t]);
    return { ids: row(b.inputIds), mask: row(b.attentionMask), types: row(b.tokenTypeIds), positions: row(pos), label: b.labels![i] };
  });
}

/** Central difference of f with respect to a[i] (restored afterwards). */
function fd(a: Float64Array, i: number, f: () => number, eps = 1e-5): number {
  const v = a[i];
  a[i] = v + eps;
  const up = f();
  a[i] = v - eps;
  const down = f();
  a[i] = v;
  return (up - down) / (2 * eps);
}

/** |got - want| <= rel * |want| + floor * max|want|, element-wise. */
function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rel = 1e-3, floor = 1e-4): void {
  expect(got.length, what).toBe(want.length);
  let max = 0;
  for (let i = 0; i < want.length; i++) max = Math.max(max, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    const tol = rel * Math.abs(want[i]) + floor * max + 1e-12;
    if (!(Math.abs(got[i] - want[i]) <= tol)) expect.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (max ${max})`);
  }
}

function pathArray(w: EncoderWeights, path: string): Float32Array {
  let v: unknown = w;
  for (const k of path.split('.')) v = (v as Record<string, unknown>)[k];
  return v as Float32Array;
}

/** Fisher by finite differences: sum over examples (and classes, weighted by p, when expected). */
function fdFisher(w: EncoderWeights, p: Params, exs: Example[], expected: boolean): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const [path, a] of p) {
    const f = new Float64Array(a.length);
    for (const ex of exs) {
      const runs: { ex: Example; weight: number }[] = [];
      if (expected && w.config.problemType !== 'regression') {
        const z = reference(w, p, ex).logits;
        const m = Math.max(...z);
        const e = z.map((v) => Math.exp(v - m));
        const Z = e.reduce((s, v) => s + v, 0);
        e.forEach((v, y) => runs.push({ ex: { ...ex, label: y }, weight: v / Z }));
      } else runs.push({ ex, weight: 1 });
      for (let i = 0; i < a.length; i++) {
        for (const r of runs) f[i] += r.weight * fd(a, i, () => reference(w, p, r.ex).loss) ** 2;
      }
    }
    out.set(path, f);
  }
  return out;
}

for (const [ci, tc] of cases.entries()) {
  describe(`onnx engine vs finite differences: ${tc.name}`, async () => {
    const w = randomWeights(tc.config, 10 + ci, tc.head, 0.4);
    const engine = await createOnnxEngine(w, { threads: 1 });
    afterAll(() => engine.dispose());
    const batch = makeBatch(tc.config, 100 + ci);
    const exs = examples(tc.config, batch);
    const p = params(w);
    const { numLayers: L, numHeads: H, intermediateSize: I, numLabels: C } = tc.config;

    it('forward matches the float64 reference', async () => {
      const logits = await engine.forward(batch);
      expectClose(logits, exs.flatMap((ex) => reference(w, p, ex).logits), 'logits', 1e-4, 1e-5);
    });

    it('per-example mask gradients match finite differences', async () => {
      const g = await engine.maskGradients(batch);
      expect(Array.from(g.logits)).toHaveLength(batch.batchSize * C);
      exs.forEach((ex, b) => {
        const masks: Masks = { head: new Float64Array(L * H).fill(1), neuron: new Float64Array(L * I).fill(1) };
        const loss = () => reference(w, p, ex, masks).loss;
        expect(g.losses[b]).toBeCloseTo(loss(), 4);
        expectClose(g.headGrads.subarray(b * L * H, (b + 1) * L * H), Array.from({ length: L * H }, (_, i) => fd(masks.head, i, loss)), `head grads ${b}`);
        expectClose(g.neuronGrads.subarray(b * L * I, (b + 1) * L * I), Array.from({ length: L * I }, (_, i) => fd(masks.neuron, i, loss)), `neuron grads ${b}`);
      });
    });

    for (const mode of ['empirical', 'expected'] as const) {
      it(`${mode} parameter Fisher matches finite differences (batched and classic loop)`, async () => {
        const want = fdFisher(w, p, exs, mode === 'expected');
        const got = await engine.parameterFisher(batch, mode);
        const classic = await classicParameterFisher(engine, batch, mode);
        expect(got.config).toBe(w.config);
        mapWeights(w, (a, _shape, path) => {
          expect(pathArray(got, path).length, path).toBe(a.length);
          expectClose(pathArray(got, path), want.get(path)!, `${mode} ${path}`);
          expectClose(pathArray(classic, path), want.get(path)!, `classic ${mode} ${path}`);
          return a;
        });
      });
    }
  });
}
