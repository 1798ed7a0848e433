import type { FamilyDescription } from '../family.ts';
import { TF_NORM_ALIASES } from './bert.ts';

/**
 * DistilBertForSequenceClassification: no token types, no pooler; pre_classifier + ReLU then
 * classifier on [CLS]. Its LayerNorms use a fixed eps of 1e-12.
 */
const distilbert: FamilyDescription = {
  name: 'distilbert',
  modelTypes: ['distilbert'],
  architecturePrefixes: ['DistilBert'],
  config: {
    numLayers: { key: 'n_layers', default: 6 },
    hiddenSize: { key: 'dim', default: 768 },
    numHeads: { key: 'n_heads', default: 12 },
    intermediateSize: { key: 'hidden_dim', default: 3072 },
    vocabSize: { key: 'vocab_size', default: 30522 },
    maxPositions: { key: 'max_position_embeddings', default: 512 },
    typeVocabSize: { value: 0 },
    layerNormEps: { value: 1e-12 },
    hiddenAct: { key: 'activation', default: 'gelu' },
    padTokenId: { key: 'pad_token_id', default: 0 },
  },
  positionStyle: 'absolute',
  hasTokenTypes: false,
  encoderPrefixes: ['distilbert.', ''],
  paramAliases: TF_NORM_ALIASES,
  embeddings: {
    word: 'embeddings.word_embeddings',
    position: 'embeddings.position_embeddings',
    norm: 'embeddings.LayerNorm',
  },
  layer: {
    query: 'transformer.layer.{l}.attention.q_lin',
    key: 'transformer.layer.{l}.attention.k_lin',
    value: 'transformer.layer.{l}.attention.v_lin',
    attnOut: 'transformer.layer.{l}.attention.out_lin',
    attnNorm: 'transformer.layer.{l}.sa_layer_norm',
    ffnIn: 'transformer.layer.{l}.ffn.lin1',
    ffnOut: 'transformer.layer.{l}.ffn.lin2',
    ffnNorm: 'transformer.layer.{l}.output_layer_norm',
  },
  headUsesPooler: false,
  classifier: [
    { module: 'pre_classifier', activation: 'relu' },
    { module: 'classifier', activation: 'none' },
  ],
};

export default distilbert;
