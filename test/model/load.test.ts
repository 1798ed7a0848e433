import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError, type Tensor } from '@fisher-merge/core';
import { saveCheckpoint } from '@fisher-merge/checkpoint';
import { describeModel, encoderTensorRoles, families, headTensorNames, labelsFromConfig, loadEncoder, modelFingerprint, toHfTensors } from '@fisher-merge/model';
import { rawSafetensors, tempDir } from '../checkpoint/helpers.ts';
import { H, tinyBert, writeModel, type TinyModel } from './tiny.ts';

async function loadError(dir: string): Promise<string> {
  try {
    await loadEncoder(dir);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected loadEncoder to fail');
}

function bytesOf(t: Tensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

describe('fixture checkpoints', () => {
  it('describeModel gives what loadEncoder does without the weights, and reads tensors on demand', async () => {
    const [info, model] = await Promise.all([describeModel('data/models/sst2'), loadEncoder('data/models/sst2')]);
    expect(info).not.toHaveProperty('weights');
    expect(info.config).toEqual(model.config);
    expect(info.weightFiles).toEqual(model.weightFiles);
    expect(encoderTensorRoles(info)).toEqual(encoderTensorRoles(model));
    const name = 'bert.encoder.layer.1.intermediate.dense.weight';
    expect(info.source.float32(name)).toEqual(model.weights.layers[1]!.ffnIn.weight);
  });

  it('loads the base BertModel: no prefix, head = [pooler], numLabels 0', async () => {
    const model = await loadEncoder('data/models/base');
    expect(model.encoderPrefix).toBe('');
    expect(model.config).toMatchObject({ family: 'bert', numLayers: 2, hiddenSize: 128, numHeads: 2, intermediateSize: 512, vocabSize: 30522, numLabels: 0 });
    expect(model.weights.head.map((h) => h.activation)).toEqual(['tanh']);
    expect(headTensorNames(model)).toEqual([]);
    const roles = encoderTensorRoles(model);
    expect(roles).toHaveLength(39);
    expect(roles.filter((r) => r.role === 'pooler').map((r) => r.name)).toEqual(['pooler.dense.weight', 'pooler.dense.bias']);
  });

  it('loads BertForSequenceClassification checkpoints with labels and problem type from config.json', async () => {
    const sst2 = await loadEncoder('data/models/sst2');
    expect(sst2.encoderPrefix).toBe('bert.');
    expect([sst2.config.numLabels, sst2.config.problemType]).toEqual([2, 'single_label_classification']);
    expect(sst2.weights.head.map((h) => [h.activation, h.outFeatures])).toEqual([['tanh', 128], ['none', 2]]);
    expect(headTensorNames(sst2)).toEqual(['classifier.weight', 'classifier.bias']);
    const stsb = await loadEncoder('data/models/stsb');
    expect([stsb.config.numLabels, stsb.config.problemType]).toEqual([1, 'regression']);
    expect(stsb.hfConfig.finetuning_task).toBe('stsb');
  });

  it('names every encoder tensor with its role, as the merge rule needs', async () => {
    const model = await loadEncoder('data/models/sst2');
    const roles = encoderTensorRoles(model);
    const st = JSON.parse(readFileSync('data/models/sst2/model.safetensors').subarray(8, 8 + 4592).toString()) as Record<string, { shape: number[] }>;
    const encoderNames = Object.keys(st).filter((n) => n.startsWith('bert.'));
    expect(roles.map((r) => r.name).sort()).toEqual(encoderNames.sort());
    for (const r of roles) expect(r.shape).toEqual(st[r.name]!.shape);
    const byName = new Map(roles.map((r) => [r.name, r]));
    expect(byName.get('bert.encoder.layer.1.attention.self.query.weight')).toEqual({ name: 'bert.encoder.layer.1.attention.self.query.weight', role: 'query', layer: 1, param: 'weight', shape: [128, 128] });
    expect(byName.get('bert.encoder.layer.0.intermediate.dense.bias')).toMatchObject({ role: 'ffnIn', layer: 0, param: 'bias', shape: [512] });
    expect(byName.get('bert.encoder.layer.0.output.LayerNorm.weight')).toMatchObject({ role: 'ffnNorm', layer: 0 });
    expect(byName.get('bert.encoder.layer.1.attention.output.dense.weight')).toMatchObject({ role: 'attnOut', layer: 1 });
    expect(byName.get('bert.embeddings.token_type_embeddings.weight')).toEqual({ name: 'bert.embeddings.token_type_embeddings.weight', role: 'embeddings', param: 'weight', shape: [2, 128] });
    expect(byName.get('bert.pooler.dense.weight')).toMatchObject({ role: 'pooler' });
  });

  it('fingerprints the weight file with sha256, also when prefetched while loading', async () => {
    const expected = createHash('sha256').update(readFileSync('data/models/rte/model.safetensors')).digest('hex');
    expect(await modelFingerprint(await loadEncoder('data/models/rte'))).toBe(expected);
    expect(await modelFingerprint(await loadEncoder('data/models/rte', { prefetchFingerprint: true }))).toBe(expected);
  });

  it('roundtrips load -> toHfTensors -> saveCheckpoint -> load bit for bit (the file, even)', async () => {
    const model = await loadEncoder('data/models/sst2');
    const dir = path.join(tempDir(), 'sst2-copy');
    await saveCheckpoint(dir, { hfConfig: model.hfConfig, tensors: toHfTensors(model, model.weights), copyFilesFrom: model.dir });
    const again = await loadEncoder(dir);
    expect(again.config).toEqual(model.config);
    const a = toHfTensors(model, model.weights);
    const b = toHfTensors(again, again.weights);
    expect(Object.keys(b)).toEqual(Object.keys(a));
    for (const name of Object.keys(a)) expect(bytesOf(b[name]!).equals(bytesOf(a[name]!))).toBe(true);
    expect(await modelFingerprint(again)).toBe(await modelFingerprint(model));
  });

  it('loads a torch-written pytorch_model.bin to the same weights as its safetensors twin', async () => {
    const bin = await loadEncoder('test/fixtures/checkpoint/bert-bin');
    const st = await loadEncoder('test/fixtures/checkpoint/bert-st');
    expect(bin.config).toEqual(st.config);
    expect(bin.config.numLabels).toBe(3);
    const a = toHfTensors(bin, bin.weights);
    const b = toHfTensors(st, st.weights);
    for (const name of Object.keys(b)) expect(bytesOf(a[name]!).equals(bytesOf(b[name]!))).toBe(true);
    expect(await modelFingerprint(bin)).not.toBe(await modelFingerprint(st));
  });
});

describe('legacy and low-precision checkpoints', () => {
  it('reads LayerNorm gamma/beta and writes them back under the same names', async () => {
    const tiny = tinyBert(21);
    const legacy: TinyModel = { config: tiny.config, tensors: {} };
    for (const [name, t] of Object.entries(tiny.tensors)) {
      legacy.tensors[name.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta')] = t;
    }
    const model = await loadEncoder(await writeModel(legacy));
    expect(model.weights.layers[1]!.ffnNorm.weight).toEqual(tiny.tensors['bert.encoder.layer.1.output.LayerNorm.weight']!.data);
    expect(model.weights.embeddings.norm.bias).toEqual(tiny.tensors['bert.embeddings.LayerNorm.bias']!.data);
    const roles = encoderTensorRoles(model);
    expect(roles.find((r) => r.name === 'bert.encoder.layer.0.attention.output.LayerNorm.gamma')).toMatchObject({ role: 'attnNorm', layer: 0, param: 'weight' });
    expect(Object.keys(toHfTensors(model, model.weights)).sort()).toEqual(Object.keys(legacy.tensors).sort());
  });

  it('converts F16 and BF16 weights to float32 on load', async () => {
    const tiny = tinyBert(22);
    const q = 'bert.encoder.layer.0.attention.self.query.weight';
    const k = 'bert.encoder.layer.0.attention.self.key.bias';
    tiny.tensors[q] = { dtype: 'F16', shape: [H, H], data: new Uint16Array(H * H).fill(0x3e00) }; // 1.5
    tiny.tensors[k] = { dtype: 'BF16', shape: [H], data: new Uint16Array(H).fill(0xc0a0) }; // -5
    const model = await loadEncoder(await writeModel(tiny));
    expect(model.weights.layers[0]!.query.weight).toEqual(new Float32Array(H * H).fill(1.5));
    expect(model.weights.layers[0]!.key.bias).toEqual(new Float32Array(H).fill(-5));
  });
});

describe('bad checkpoints', () => {
  it('reads class names and ids from id2label / label2id (Hugging Face defaults where absent) and names a bad entry', () => {
    expect(labelsFromConfig({ id2label: { 0: 'neg', 1: 'pos' }, label2id: { neg: 0, pos: 1, NEG: 0 } })).toEqual({ names: ['neg', 'pos'], ids: { neg: 0, pos: 1, NEG: 0 } });
    expect(labelsFromConfig({ num_labels: 3 })).toEqual({ names: ['LABEL_0', 'LABEL_1', 'LABEL_2'], ids: { LABEL_0: 0, LABEL_1: 1, LABEL_2: 2 } });
    expect(() => labelsFromConfig({ id2label: { 0: 'a', 1: 'b' }, label2id: { a: 0, b: 2 } }, 'c.json')).toThrow(new UserError('c.json: label2id "b" is 2, expected a class index in [0, 1]'));
    expect(() => labelsFromConfig({ id2label: { 0: 'a', 2: 'b' } }, 'c.json')).toThrow(new UserError('c.json: id2label entry "2": "b" must map a class index in [0, 1] to a name'));
  });

  it('names the tensor whose shape disagrees with config.json', async () => {
    const tiny = tinyBert(31);
    tiny.tensors['bert.encoder.layer.0.attention.self.query.weight'] = { dtype: 'F32', shape: [H, 4], data: new Float32Array(H * 4) };
    const dir = await writeModel(tiny);
    expect(await loadError(dir)).toBe(`${dir}/model.safetensors: tensor 'bert.encoder.layer.0.attention.self.query.weight' has shape [8,4], expected [8,8] from ${dir}/config.json`);
  });

  it('names the classifier whose rows disagree with id2label', async () => {
    const tiny = tinyBert(32, 3);
    tiny.config.id2label = { 0: 'a', 1: 'b' };
    const dir = await writeModel(tiny);
    expect(await loadError(dir)).toBe(`${dir}/model.safetensors: tensor 'classifier.weight' has shape [3,8], expected [2,8] from ${dir}/config.json`);
  });

  it('rejects a non-float weight dtype', async () => {
    const tiny = tinyBert(33);
    tiny.tensors['bert.pooler.dense.bias'] = { dtype: 'I32', shape: [H], data: new Int32Array(H) };
    const dir = await writeModel(tiny);
    expect(await loadError(dir)).toBe(`${dir}/model.safetensors: tensor 'bert.pooler.dense.bias' has dtype I32, expected a floating-point dtype (F32, F16, BF16, F64)`);
  });

  it('names a missing tensor', async () => {
    const tiny = tinyBert(34);
    delete tiny.tensors['bert.encoder.layer.1.output.LayerNorm.bias'];
    const dir = await writeModel(tiny);
    expect(await loadError(dir)).toBe(`model.safetensors: missing tensor 'bert.encoder.layer.1.output.LayerNorm.bias' (a bert checkpoint in ${dir})`);
  });

  it('requires the pooler when a BERT classifier is present', async () => {
    const tiny = tinyBert(35);
    delete tiny.tensors['bert.pooler.dense.weight'];
    const dir = await writeModel(tiny);
    expect(await loadError(dir)).toBe(`model.safetensors: missing tensor 'bert.pooler.dense.weight' (a bert checkpoint in ${dir})`);
  });

  it('lists the known model types for an unknown one', async () => {
    const tiny = tinyBert(36);
    tiny.config.model_type = 'gpt2';
    const dir = await writeModel(tiny);
    const known = (await families()).flatMap((f) => f.modelTypes);
    expect(known).toEqual(expect.arrayContaining(['bert', 'distilbert', 'electra', 'roberta']));
    expect(await loadError(dir)).toBe(`${dir}/config.json: has unknown model_type "gpt2" (known: ${known.join(', ')})`);
  });

  it('rejects unsupported config values', async () => {
    const tiny = tinyBert(37);
    tiny.config.hidden_act = 'swish';
    const dir = await writeModel(tiny);
    expect(await loadError(dir)).toBe(`${dir}/config.json: "hidden_act" "swish" is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, relu, tanh)`);
    tiny.config.hidden_act = 'gelu';
    tiny.config.num_attention_heads = 3;
    await writeModel(tiny, dir);
    expect(await loadError(dir)).toBe(`${dir}/config.json: hidden size 8 is not a multiple of the number of attention heads 3`);
    tiny.config.num_attention_heads = 2;
    tiny.config.position_embedding_type = 'relative_key';
    await writeModel(tiny, dir);
    expect(await loadError(dir)).toBe(`${dir}/config.json: position_embedding_type "relative_key" is not supported (only "absolute")`);
  });

  it('surfaces corrupt safetensors and unsupported dtypes with the file and tensor', async () => {
    const dir = await writeModel(tinyBert(38));
    const header = { 'bert.embeddings.word_embeddings.weight': { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } };
    writeFileSync(path.join(dir, 'model.safetensors'), rawSafetensors(header, new Uint8Array(2)));
    expect(await loadError(dir)).toBe(
      `${dir}/model.safetensors: tensor 'bert.embeddings.word_embeddings.weight' has unsupported dtype "F8_E4M3" (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)`,
    );
    writeFileSync(path.join(dir, 'model.safetensors'), readFileSync('data/models/sst2/model.safetensors').subarray(0, 5000));
    expect(await loadError(dir)).toMatch(/^\/.*\/model\.safetensors: tensor '[^']+' data_offsets \[\d+,\d+\] extend beyond the file \(5000 bytes\)$/);
  });

  it('reports a missing or malformed config.json', async () => {
    const dir = tempDir();
    expect(await loadError(dir)).toBe(`${dir}/config.json: cannot read (ENOENT)`);
    writeFileSync(path.join(dir, 'config.json'), '{"model_type": ');
    expect(await loadError(dir)).toMatch(new RegExp(`^${dir}/config\\.json: not valid JSON`));
  });
});
