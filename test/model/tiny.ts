import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Tensor } from '@fisher-merge/core';
import { writeSafetensors } from '@fisher-merge/checkpoint';
import { randomF32, rng, tempDir } from '../checkpoint/helpers.ts';

/**
 * Tiny random checkpoints in Hugging Face's exact layouts (names and shapes as the modeling files
 * define them), written independently of the family descriptions they test.
 */
export const H = 8;
export const I = 16;
export const V = 24;
export const P = 20;
export const L = 2;

type Tensors = Record<string, Tensor>;

function linear(out: Tensors, name: string, rows: number, cols: number, random: () => number): void {
  out[`${name}.weight`] = randomF32([rows, cols], random);
  out[`${name}.bias`] = randomF32([rows], random);
}

function norm(out: Tensors, name: string, size: number, random: () => number): void {
  out[`${name}.weight`] = randomF32([size], random);
  out[`${name}.bias`] = randomF32([size], random);
}

/** BertModel/RobertaModel/ElectraModel body: embeddings (size E, optional token types) and BertLayer modules. */
function bertBody(p: string, E: number, typeVocab: number, random: () => number): Tensors {
  const t: Tensors = {};
  t[`${p}embeddings.word_embeddings.weight`] = randomF32([V, E], random);
  t[`${p}embeddings.position_embeddings.weight`] = randomF32([P, E], random);
  if (typeVocab > 0) t[`${p}embeddings.token_type_embeddings.weight`] = randomF32([typeVocab, E], random);
  norm(t, `${p}embeddings.LayerNorm`, E, random);
  for (let l = 0; l < L; l++) {
    const q = `${p}encoder.layer.${l}.`;
    linear(t, `${q}attention.self.query`, H, H, random);
    linear(t, `${q}attention.self.key`, H, H, random);
    linear(t, `${q}attention.self.value`, H, H, random);
    linear(t, `${q}attention.output.dense`, H, H, random);
    norm(t, `${q}attention.output.LayerNorm`, H, random);
    linear(t, `${q}intermediate.dense`, I, H, random);
    linear(t, `${q}output.dense`, H, I, random);
    norm(t, `${q}output.LayerNorm`, H, random);
  }
  return t;
}

export interface TinyModel {
  config: Record<string, unknown>;
  tensors: Tensors;
}

const bertConfig = { hidden_size: H, num_hidden_layers: L, num_attention_heads: 2, intermediate_size: I, vocab_size: V, max_position_embeddings: P, hidden_act: 'gelu' };
const labels = (n: number) => ({ id2label: Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), `L${i}`])) });

/** BertForSequenceClassification (or BertModel with `bare`). */
export function tinyBert(seed: number, numLabels = 3, bare = false): TinyModel {
  const random = rng(seed);
  const tensors = bertBody(bare ? '' : 'bert.', H, 2, random);
  linear(tensors, `${bare ? '' : 'bert.'}pooler.dense`, H, H, random);
  if (!bare) linear(tensors, 'classifier', numLabels, H, random);
  return { config: { model_type: 'bert', ...bertConfig, type_vocab_size: 2, layer_norm_eps: 1e-12, ...(bare ? {} : labels(numLabels)) }, tensors };
}

/** RobertaForSequenceClassification: no pooler (add_pooling_layer=False), RobertaClassificationHead. */
export function tinyRoberta(seed: number, numLabels = 3): TinyModel {
  const random = rng(seed);
  const tensors = bertBody('roberta.', H, 1, random);
  linear(tensors, 'classifier.dense', H, H, random);
  linear(tensors, 'classifier.out_proj', numLabels, H, random);
  return { config: { model_type: 'roberta', ...bertConfig, type_vocab_size: 1, layer_norm_eps: 1e-5, pad_token_id: 1, ...labels(numLabels) }, tensors };
}

/** ElectraForSequenceClassification with embedding_size E (embeddings_project when E != H). */
export function tinyElectra(seed: number, E = 4, numLabels = 2): TinyModel {
  const random = rng(seed);
  const tensors = bertBody('electra.', E, 2, random);
  if (E !== H) linear(tensors, 'electra.embeddings_project', H, E, random);
  linear(tensors, 'classifier.dense', H, H, random);
  linear(tensors, 'classifier.out_proj', numLabels, H, random);
  return { config: { model_type: 'electra', ...bertConfig, embedding_size: E, type_vocab_size: 2, ...labels(numLabels) }, tensors };
}

/** DistilBertForSequenceClassification. */
export function tinyDistilbert(seed: number, numLabels = 2): TinyModel {
  const random = rng(seed);
  const t: Tensors = {};
  t['distilbert.embeddings.word_embeddings.weight'] = randomF32([V, H], random);
  t['distilbert.embeddings.position_embeddings.weight'] = randomF32([P, H], random);
  norm(t, 'distilbert.embeddings.LayerNorm', H, random);
  for (let l = 0; l < L; l++) {
    const q = `distilbert.transformer.layer.${l}.`;
    for (const m of ['q_lin', 'k_lin', 'v_lin', 'out_lin']) linear(t, `${q}attention.${m}`, H, H, random);
    norm(t, `${q}sa_layer_norm`, H, random);
    linear(t, `${q}ffn.lin1`, I, H, random);
    linear(t, `${q}ffn.lin2`, H, I, random);
    norm(t, `${q}output_layer_norm`, H, random);
  }
  linear(t, 'pre_classifier', H, H, random);
  linear(t, 'classifier', numLabels, H, random);
  return {
    config: { model_type: 'distilbert', dim: H, n_layers: L, n_heads: 2, hidden_dim: I, vocab_size: V, max_position_embeddings: P, activation: 'gelu', ...labels(numLabels) },
    tensors: t,
  };
}

/** Writes config.json + model.safetensors into a fresh folder. */
export async function writeModel(model: TinyModel, dir = tempDir('fm-model-')): Promise<string> {
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(model.config));
  await writeSafetensors(path.join(dir, 'model.safetensors'), model.tensors);
  return dir;
}
