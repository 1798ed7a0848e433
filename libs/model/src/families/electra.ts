import type { FamilyDescription } from '../family.ts';
import { BERT_EMBEDDINGS, BERT_LAYER, TF_NORM_ALIASES } from './bert.ts';

/**
 * ELECTRA discriminator with ElectraForSequenceClassification's head (dense + gelu, out_proj; no
 * pooler). Embeddings may be smaller than the hidden size and projected by `embeddings_project`.
 */
const electra: FamilyDescription = {
  name: 'electra',
  modelTypes: ['electra'],
  architecturePrefixes: ['Electra'],
  config: {
    numLayers: { key: 'num_hidden_layers', default: 12 },
    hiddenSize: { key: 'hidden_size', default: 256 },
    numHeads: { key: 'num_attention_heads', default: 4 },
    intermediateSize: { key: 'intermediate_size', default: 1024 },
    vocabSize: { key: 'vocab_size', default: 30522 },
    maxPositions: { key: 'max_position_embeddings', default: 512 },
    typeVocabSize: { key: 'type_vocab_size', default: 2 },
    embeddingSize: { key: 'embedding_size', default: 128 },
    layerNormEps: { key: 'layer_norm_eps', default: 1e-12 },
    hiddenAct: { key: 'hidden_act', default: 'gelu' },
    padTokenId: { key: 'pad_token_id', default: 0 },
  },
  positionStyle: 'absolute',
  hasTokenTypes: true,
  encoderPrefixes: ['electra.', ''],
  paramAliases: TF_NORM_ALIASES,
  embeddings: { ...BERT_EMBEDDINGS, project: 'embeddings_project' },
  layer: BERT_LAYER,
  headUsesPooler: false,
  classifier: [
    { module: 'classifier.dense', activation: 'gelu' },
    { module: 'classifier.out_proj', activation: 'none' },
  ],
};

export default electra;
