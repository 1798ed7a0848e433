// Real-world checkpoint layouts built from the sst2 fixture model by renaming its tensors: each is a
// real Hugging Face folder (config.json + model.safetensors) in a temp dir, and each must load to the
// same weights and give the golden PyTorch logits of the original.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError, type Tensor, type TokenBatch } from '@fisher-merge/core';
import { readSafetensors, writeSafetensors } from '@fisher-merge/checkpoint';
import { encoderTensorRoles, families, flattenWeights, headTensorNames, loadEncoder, toHfTensors, type EncoderWeights, type LoadedModel } from '@fisher-merge/model';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';
import { tempDir } from '../checkpoint/helpers.ts';

const ORIGINAL = 'data/models/sst2';
const originalConfig = JSON.parse(readFileSync(`${ORIGINAL}/config.json`, 'utf8')) as Record<string, unknown>;
const originalFile = readSafetensors(`${ORIGINAL}/model.safetensors`);
const originalTensors: Record<string, Tensor> = Object.fromEntries(originalFile.names().map((n) => [n, originalFile.tensor(n)]));
const golden = readSafetensors('test/fixtures/golden/sst2/val16_inputs_logits.safetensors');
const H = originalConfig.hidden_size as number;
const V = originalConfig.vocab_size as number;

/** Writes a checkpoint folder: the given config.json and tensors. */
async function writeFolder(config: Record<string, unknown>, tensors: Record<string, Tensor>): Promise<string> {
  const dir = tempDir('fm-layout-');
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  return dir;
}

/** The original tensors renamed by `rename` (undefined drops a tensor). */
function renamed(rename: (name: string) => string | undefined): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(originalTensors)) {
    const to = rename(name);
    if (to !== undefined) out[to] = t;
  }
  return out;
}

const f32 = (shape: number[], fill: number): Tensor => ({ dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });

/** The tensors of BertForPreTraining's / BertForMaskedLM's heads, which the loader must not read. */
function lmHead(nextSentence: boolean): Record<string, Tensor> {
  const head: Record<string, Tensor> = {
    'cls.predictions.bias': f32([V], 0.5),
    'cls.predictions.transform.dense.weight': f32([H, H], 0.25),
    'cls.predictions.transform.dense.bias': f32([H], 0.125),
    'cls.predictions.transform.LayerNorm.weight': f32([H], 1),
    'cls.predictions.transform.LayerNorm.bias': f32([H], 0),
    'cls.predictions.decoder.weight': originalTensors['bert.embeddings.word_embeddings.weight']!,
  };
  if (nextSentence) Object.assign(head, { 'cls.seq_relationship.weight': f32([2, H], -1), 'cls.seq_relationship.bias': f32([2], 2) });
  return head;
}

/** A copy of a config.json object without some keys. */
function without(config: Record<string, unknown>, ...keys: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).filter(([k]) => !keys.includes(k)));
}

/** config.json of a checkpoint without a sequence classifier. */
const encoderConfig = without(originalConfig, 'id2label', 'label2id', 'finetuning_task', 'problem_type', 'architectures');

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Every parameter array of `a` equals the one of `b` bit for bit. */
function expectSameWeights(a: EncoderWeights, b: EncoderWeights): void {
  const x = flattenWeights(a);
  const y = flattenWeights(b);
  expect(x.length).toBe(y.length);
  x.forEach((v, i) => expect(bytesOf(v).equals(bytesOf(y[i]!)), `parameter ${i}`).toBe(true));
}

describe('real-world BERT layouts load to the sst2 model and give its golden logits', async () => {
  const original = await loadEncoder(ORIGINAL);
  const engines: { dispose(): Promise<void> }[] = [];
  afterAll(() => Promise.all(engines.map((e) => e.dispose())));

  /** Logits of the 16 golden validation examples, within the golden test's 1e-4. */
  async function expectGoldenLogits(weights: EncoderWeights): Promise<void> {
    const engine = await createOnnxEngine(weights);
    engines.push(engine);
    const int32 = (name: string) => Int32Array.from(golden.tensor(name).data as BigInt64Array, Number);
    const [B, T] = golden.info('input_ids').shape as [number, number];
    const batch: TokenBatch = { batchSize: B, seqLen: T, inputIds: int32('input_ids'), attentionMask: int32('attention_mask'), tokenTypeIds: int32('token_type_ids') };
    const logits = await engine.forward(batch);
    const want = golden.float64('logits_f64');
    expect(logits.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) expect(Math.abs(logits[i]! - want[i]!), `logit ${i}`).toBeLessThanOrEqual(1e-4);
  }

  /** A bare encoder's weights with the original's classifier (and pooler, when the encoder has none) on top. */
  function withOriginalHead(encoder: LoadedModel): EncoderWeights {
    const head = original.weights.head.slice(encoder.weights.head.length);
    return { ...encoder.weights, config: original.config, head: [...encoder.weights.head, ...head] };
  }

  it('TF-converted names (LayerNorm gamma/beta) and a config.json without model_type or architectures', async () => {
    const tensors = renamed((n) => n.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta'));
    const config = without(originalConfig, 'model_type', 'architectures');
    const model = await loadEncoder(await writeFolder(config, tensors));
    expect(model.family.name).toBe('bert');
    expect(model.config).toEqual(original.config);
    expect(Object.keys(toHfTensors(model, model.weights)).sort()).toEqual(Object.keys(tensors).sort());
    expect(encoderTensorRoles(model).find((r) => r.name === 'bert.encoder.layer.1.output.LayerNorm.beta')).toMatchObject({ role: 'ffnNorm', layer: 1, param: 'bias' });
    expectSameWeights(model.weights, original.weights);
    await expectGoldenLogits(model.weights);
  });

  it('a bare BertModel: no bert. prefix, no classifier, the pooler as its only head layer', async () => {
    const tensors = renamed((n) => (n.startsWith('bert.') ? n.slice('bert.'.length) : undefined));
    const model = await loadEncoder(await writeFolder({ ...encoderConfig, architectures: ['BertModel'] }, tensors));
    expect([model.encoderPrefix, model.config.numLabels, headTensorNames(model)]).toEqual(['', 0, []]);
    expect(model.weights.head.map((h) => h.activation)).toEqual(['tanh']);
    expect(Object.keys(toHfTensors(model, model.weights)).sort()).toEqual(Object.keys(tensors).sort());
    const weights = withOriginalHead(model);
    expectSameWeights(weights, original.weights);
    await expectGoldenLogits(weights);
  });

  it('BertForPreTraining: bert. encoder with pooler, cls.predictions.* and cls.seq_relationship.* not read', async () => {
    const tensors = { ...renamed((n) => (n.startsWith('bert.') ? n : undefined)), ...lmHead(true) };
    const model = await loadEncoder(await writeFolder({ ...encoderConfig, architectures: ['BertForPreTraining'] }, tensors));
    expect([model.encoderPrefix, model.config.numLabels, headTensorNames(model)]).toEqual(['bert.', 0, []]);
    const written = Object.keys(toHfTensors(model, model.weights));
    expect(written.filter((n) => n.startsWith('cls.'))).toEqual([]);
    expect(written.sort()).toEqual(Object.keys(tensors).filter((n) => n.startsWith('bert.')).sort());
    const weights = withOriginalHead(model);
    expectSameWeights(weights, original.weights);
    await expectGoldenLogits(weights);
  });

  it('BertForMaskedLM: no pooler (add_pooling_layer=False), no model_type, cls.predictions.* not read', async () => {
    const tensors = { ...renamed((n) => (n.startsWith('bert.') && !n.startsWith('bert.pooler.') ? n : undefined)), ...lmHead(false) };
    const config = without(encoderConfig, 'model_type');
    const model = await loadEncoder(await writeFolder({ ...config, architectures: ['BertForMaskedLM'] }, tensors));
    expect([model.family.name, model.encoderPrefix, model.weights.head.length]).toEqual(['bert', 'bert.', 0]);
    expect(encoderTensorRoles(model).every((r) => r.name.startsWith('bert.') && !r.name.startsWith('bert.pooler.'))).toBe(true);
    const weights = withOriginalHead(model);
    expectSameWeights(weights, original.weights);
    await expectGoldenLogits(weights);
  });
});

describe('choosing the family', () => {
  async function loadError(dir: string): Promise<string> {
    const e = await loadEncoder(dir).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }

  it('loads every file in libs/model/src/families/, each default-exporting one family', async () => {
    const files = readdirSync('libs/model/src/families').filter((f) => f.endsWith('.ts'));
    const loaded = await families();
    expect(loaded).toHaveLength(files.length);
    expect(new Set(loaded.map((f) => f.name)).size).toBe(files.length);
    expect(loaded.map((f) => f.name)).toEqual(expect.arrayContaining(['bert', 'roberta', 'distilbert', 'electra']));
  });

  it('refuses bare BERT-style names with neither model_type nor architectures: they fit BERT, ELECTRA and RoBERTa alike', async () => {
    const config = without(encoderConfig, 'model_type');
    const dir = await writeFolder(config, renamed((n) => (n.startsWith('bert.') ? n.slice('bert.'.length) : undefined)));
    // Other family files may fit too: the families are whatever libs/model/src/families/ holds.
    const message = await loadError(dir);
    expect(message).toMatch(new RegExp(`^${dir}/config\\.json: the tensors of model\\.safetensors fit several families \\(([a-z, -]+)\\); set "model_type"$`));
    expect(message).toMatch(/\bbert, .*\belectra, .*\broberta\b/);
  });

  it('picks RoBERTa for the same tensors when architectures says so, with its padding-offset positions', async () => {
    const config = without(encoderConfig, 'model_type');
    const dir = await writeFolder({ ...config, architectures: ['RobertaModel'] }, renamed((n) => (n.startsWith('bert.') ? n.slice('bert.'.length) : undefined)));
    const model = await loadEncoder(dir);
    expect([model.family.name, model.config.positionStyle]).toEqual(['roberta', 'padding-offset']);
  });

  it('names the missing embeddings when the tensors fit no family', async () => {
    const config = without(encoderConfig, 'model_type');
    const dir = await writeFolder(config, renamed((n) => (n.startsWith('bert.encoder.') ? n : undefined)));
    const expected = (await families()).map((f) => `'${f.encoderPrefixes[0]}${f.embeddings.word}.weight' (${f.name})`);
    expect(expected).toContain("'bert.embeddings.word_embeddings.weight' (bert)");
    expect(await loadError(dir)).toBe(`model.safetensors: no known family's tensors in ${dir} (expected ${expected.join(' or ')})`);
  });

  it('names the missing tensor of the family model_type names', async () => {
    const dir = await writeFolder(encoderConfig, renamed((n) => (n.includes('layer.0.attention.self.query') ? undefined : n)));
    expect(await loadError(dir)).toBe(`model.safetensors: missing tensor 'bert.encoder.layer.0.attention.self.query.weight' (a bert checkpoint in ${dir})`);
  });
});
