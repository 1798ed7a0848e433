import { describe, expect, it } from 'vitest';
import type { Tensor } from '@fisher-merge/core';
import { saveCheckpoint } from '@fisher-merge/checkpoint';
import { encoderTensorRoles, headTensorNames, loadEncoder, toHfTensors, type LoadedModel } from '@fisher-merge/model';
import { tempDir } from '../checkpoint/helpers.ts';
import { H, I, L, P, V, tinyBert, tinyDistilbert, tinyElectra, tinyRoberta, writeModel, type TinyModel } from './tiny.ts';

function f32(t: Tensor | undefined): Float32Array {
  if (!t) throw new Error('tensor missing from the tiny checkpoint');
  return t.data as Float32Array;
}

/** toHfTensors reproduces every written tensor bit for bit, and a saved copy loads to the same weights. */
async function expectRoundtrip(model: LoadedModel, tiny: TinyModel, ignored: string[] = []): Promise<void> {
  const out = toHfTensors(model, model.weights);
  const written = Object.keys(tiny.tensors).filter((n) => !ignored.includes(n));
  expect(Object.keys(out).sort()).toEqual(written.sort());
  for (const name of written) expect(out[name]!.data).toEqual(tiny.tensors[name]!.data);
  const dir = `${tempDir()}/copy`;
  await saveCheckpoint(dir, { hfConfig: model.hfConfig, tensors: out });
  const again = await loadEncoder(dir);
  expect(again.config).toEqual(model.config);
  const outAgain = toHfTensors(again, again.weights);
  for (const name of written) expect(bytesOf(f32(outAgain[name])).equals(bytesOf(f32(tiny.tensors[name])))).toBe(true);
}

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function roleOf(model: LoadedModel, name: string) {
  return encoderTensorRoles(model).find((r) => r.name === name);
}

describe('RoBERTa', () => {
  it('loads RobertaForSequenceClassification: padding-offset positions, classifier.dense+tanh then out_proj, no pooler', async () => {
    const tiny = tinyRoberta(11);
    const model = await loadEncoder(await writeModel(tiny));
    expect(model.encoderPrefix).toBe('roberta.');
    expect(model.config).toMatchObject({
      family: 'roberta', numLayers: L, hiddenSize: H, intermediateSize: I, vocabSize: V, maxPositions: P, typeVocabSize: 1,
      embeddingSize: H, layerNormEps: 1e-5, padTokenId: 1, positionStyle: 'padding-offset', numLabels: 3, problemType: 'single_label_classification',
    });
    expect(model.weights.head.map((h) => [h.activation, h.outFeatures, h.inFeatures])).toEqual([['tanh', H, H], ['none', 3, H]]);
    expect(model.weights.head[0]!.weight).toEqual(f32(tiny.tensors['classifier.dense.weight']));
    expect(model.weights.head[1]!.bias).toEqual(f32(tiny.tensors['classifier.out_proj.bias']));
    expect(model.weights.layers[1]!.ffnOut.weight).toEqual(f32(tiny.tensors['roberta.encoder.layer.1.output.dense.weight']));
    expect(headTensorNames(model)).toEqual(['classifier.dense.weight', 'classifier.dense.bias', 'classifier.out_proj.weight', 'classifier.out_proj.bias']);
    expect(encoderTensorRoles(model).some((r) => r.role === 'pooler')).toBe(false);
    expect(roleOf(model, 'roberta.encoder.layer.0.attention.output.LayerNorm.bias')).toEqual({
      name: 'roberta.encoder.layer.0.attention.output.LayerNorm.bias', role: 'attnNorm', layer: 0, param: 'bias', shape: [H],
    });
    await expectRoundtrip(model, tiny);
  });

  it('loads a bare RobertaModel (no prefix) with its pooler as the only head layer', async () => {
    const tiny = tinyRoberta(18);
    const bare: TinyModel = { config: { ...tiny.config, id2label: undefined }, tensors: {} };
    for (const [name, t] of Object.entries(tiny.tensors)) if (name.startsWith('roberta.')) bare.tensors[name.slice('roberta.'.length)] = t;
    bare.tensors['pooler.dense.weight'] = tiny.tensors['classifier.dense.weight']!;
    bare.tensors['pooler.dense.bias'] = tiny.tensors['classifier.dense.bias']!;
    const model = await loadEncoder(await writeModel(bare));
    expect(model.encoderPrefix).toBe('');
    expect(model.config.numLabels).toBe(0);
    expect(model.weights.head.map((h) => h.activation)).toEqual(['tanh']);
    expect(roleOf(model, 'pooler.dense.bias')).toMatchObject({ role: 'pooler', shape: [H] });
    await expectRoundtrip(model, bare);
  });
});

describe('DistilBERT', () => {
  it('maps dim/n_layers/n_heads/hidden_dim/activation, has no token types, pre_classifier+relu then classifier', async () => {
    const tiny = tinyDistilbert(12);
    const model = await loadEncoder(await writeModel(tiny));
    expect(model.encoderPrefix).toBe('distilbert.');
    expect(model.config).toMatchObject({
      family: 'distilbert', numLayers: L, hiddenSize: H, numHeads: 2, intermediateSize: I, typeVocabSize: 0, layerNormEps: 1e-12,
      hiddenAct: 'gelu', padTokenId: 0, positionStyle: 'absolute', numLabels: 2,
    });
    expect(model.weights.embeddings.tokenType).toBeUndefined();
    expect(model.weights.head.map((h) => h.activation)).toEqual(['relu', 'none']);
    expect(model.weights.head[0]!.weight).toEqual(f32(tiny.tensors['pre_classifier.weight']));
    const layer = model.weights.layers[1]!;
    expect(layer.query.weight).toEqual(f32(tiny.tensors['distilbert.transformer.layer.1.attention.q_lin.weight']));
    expect(layer.attnNorm.weight).toEqual(f32(tiny.tensors['distilbert.transformer.layer.1.sa_layer_norm.weight']));
    expect(layer.ffnIn.bias).toEqual(f32(tiny.tensors['distilbert.transformer.layer.1.ffn.lin1.bias']));
    expect(layer.ffnNorm.bias).toEqual(f32(tiny.tensors['distilbert.transformer.layer.1.output_layer_norm.bias']));
    const roles = encoderTensorRoles(model);
    expect(roles.filter((r) => r.layer === 0).map((r) => `${r.role}.${r.param}`)).toEqual(
      ['query', 'key', 'value', 'attnOut', 'attnNorm', 'ffnIn', 'ffnOut', 'ffnNorm'].flatMap((r) => [`${r}.weight`, `${r}.bias`]),
    );
    expect(roleOf(model, 'distilbert.transformer.layer.1.ffn.lin2.weight')).toMatchObject({ role: 'ffnOut', layer: 1, shape: [H, I] });
    await expectRoundtrip(model, tiny);
  });

  it('keeps DistilBERT eps fixed at 1e-12 whatever config.json says', async () => {
    const tiny = tinyDistilbert(13);
    tiny.config.layer_norm_eps = 1e-5;
    expect((await loadEncoder(await writeModel(tiny))).config.layerNormEps).toBe(1e-12);
  });
});

describe('ELECTRA', () => {
  it('loads the discriminator with embedding_size < hidden_size through embeddings_project, dense+gelu head', async () => {
    const tiny = tinyElectra(14, 4);
    const model = await loadEncoder(await writeModel(tiny));
    expect(model.encoderPrefix).toBe('electra.');
    expect(model.config).toMatchObject({ family: 'electra', embeddingSize: 4, hiddenSize: H, typeVocabSize: 2, numLabels: 2 });
    const project = model.weights.embeddings.project!;
    expect([project.outFeatures, project.inFeatures]).toEqual([H, 4]);
    expect(project.weight).toEqual(f32(tiny.tensors['electra.embeddings_project.weight']));
    expect(model.weights.head.map((h) => h.activation)).toEqual(['gelu', 'none']);
    expect(roleOf(model, 'electra.embeddings_project.bias')).toEqual({ name: 'electra.embeddings_project.bias', role: 'embeddings', param: 'bias', shape: [H] });
    expect(roleOf(model, 'electra.embeddings.word_embeddings.weight')).toMatchObject({ role: 'embeddings', shape: [V, 4] });
    await expectRoundtrip(model, tiny);
  });

  it('has no projection when embedding_size equals hidden_size', async () => {
    const tiny = tinyElectra(15, H);
    const model = await loadEncoder(await writeModel(tiny));
    expect(model.weights.embeddings.project).toBeUndefined();
    await expectRoundtrip(model, tiny);
  });

  it('loads an ElectraForPreTraining discriminator as a bare encoder, ignoring its prediction head', async () => {
    const tiny = tinyElectra(16, 4);
    for (const name of headNames(tiny)) delete tiny.tensors[name];
    tiny.tensors['discriminator_predictions.dense.weight'] = tiny.tensors['electra.encoder.layer.0.attention.self.query.weight']!;
    const model = await loadEncoder(await writeModel(tiny));
    expect(model.config.numLabels).toBe(0);
    expect(model.weights.head).toEqual([]);
    expect(headTensorNames(model)).toEqual([]);
    await expectRoundtrip(model, tiny, ['discriminator_predictions.dense.weight']);
  });
});

function headNames(tiny: TinyModel): string[] {
  return Object.keys(tiny.tensors).filter((n) => n.startsWith('classifier.'));
}

describe('BERT (tiny)', () => {
  it('puts the pooler (tanh) before the classifier and gives the classifier numLabels rows', async () => {
    const tiny = tinyBert(17, 5);
    const model = await loadEncoder(await writeModel(tiny));
    expect(model.weights.head.map((h) => [h.activation, h.outFeatures])).toEqual([['tanh', H], ['none', 5]]);
    expect(model.weights.head[0]!.weight).toEqual(f32(tiny.tensors['bert.pooler.dense.weight']));
    expect(roleOf(model, 'bert.pooler.dense.weight')).toMatchObject({ role: 'pooler', shape: [H, H] });
    await expectRoundtrip(model, tiny);
  });
});
