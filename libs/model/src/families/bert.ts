import type { FamilyDescription, ParamAliases } from '../family.ts';

/** BERT layer modules (BertLayer), shared by RoBERTa and ELECTRA. */
export const BERT_LAYER: FamilyDescription['layer'] = {
  query: 'encoder.layer.{l}.attention.self.query',
  key: 'encoder.layer.{l}.attention.self.key',
  value: 'encoder.layer.{l}.attention.self.value',
  attnOut: 'encoder.layer.{l}.attention.output.dense',
  attnNorm: 'encoder.layer.{l}.attention.output.LayerNorm',
  ffnIn: 'encoder.layer.{l}.intermediate.dense',
  ffnOut: 'encoder.layer.{l}.output.dense',
  ffnNorm: 'encoder.layer.{l}.output.LayerNorm',
};

/** BertConfig keys and defaults. */
export const BERT_CONFIG: FamilyDescription['config'] = {
  numLayers: { key: 'num_hidden_layers', default: 12 },
  hiddenSize: { key: 'hidden_size', default: 768 },
  numHeads: { key: 'num_attention_heads', default: 12 },
  intermediateSize: { key: 'intermediate_size', default: 3072 },
  vocabSize: { key: 'vocab_size', default: 30522 },
  maxPositions: { key: 'max_position_embeddings', default: 512 },
  typeVocabSize: { key: 'type_vocab_size', default: 2 },
  layerNormEps: { key: 'layer_norm_eps', default: 1e-12 },
  hiddenAct: { key: 'hidden_act', default: 'gelu' },
  padTokenId: { key: 'pad_token_id', default: 0 },
};

export const BERT_EMBEDDINGS: FamilyDescription['embeddings'] = {
  word: 'embeddings.word_embeddings',
  position: 'embeddings.position_embeddings',
  tokenType: 'embeddings.token_type_embeddings',
  norm: 'embeddings.LayerNorm',
};

/** TF-converted checkpoints name LayerNorm weight/bias gamma/beta (Hugging Face renames them on load). */
export const TF_NORM_ALIASES: ParamAliases = { norm: { weight: ['gamma'], bias: ['beta'] } };

/**
 * BertModel / BertForSequenceClassification: pooler (dense + tanh on [CLS]) feeds the classifier. */
export const bert: FamilyDescription = {
  name: 'bert',
  modelTypes: ['bert'],
  architecturePrefixes: ['Bert'],
  config: BERT_CONFIG,
  positionStyle: 'absolute',
  hasTokenTypes: true,
  encoderPrefixes: ['bert.', ''],
  paramAliases: TF_NORM_ALIASES,
  embeddings: BERT_EMBEDDINGS,
  layer: BERT_LAYER,
  pooler: { module: 'pooler.dense', activation: 'tanh' },
  headUsesPooler: true,
  classifier: [{ module: 'classifier', activation: 'none' }],
};

export default bert;
