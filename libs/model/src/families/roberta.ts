import type { FamilyDescription } from '../family.ts';
import { BERT_CONFIG, BERT_EMBEDDINGS, BERT_LAYER, TF_NORM_ALIASES } from './bert.ts';

/**
 * RobertaForSequenceClassification: BERT modules, positions counted from padding_idx + 1, and a
 * classification head (dense + tanh, out_proj) on <s> that bypasses the pooler.
 */
const roberta: FamilyDescription = {
  name: 'roberta',
  modelTypes: ['roberta'],
  architecturePrefixes: ['Roberta'],
  config: { ...BERT_CONFIG, padTokenId: { key: 'pad_token_id', default: 1 } },
  positionStyle: 'padding-offset',
  hasTokenTypes: true,
  encoderPrefixes: ['roberta.', ''],
  paramAliases: TF_NORM_ALIASES,
  embeddings: BERT_EMBEDDINGS,
  layer: BERT_LAYER,
  pooler: { module: 'pooler.dense', activation: 'tanh' },
  headUsesPooler: false,
  classifier: [
    { module: 'classifier.dense', activation: 'tanh' },
    { module: 'classifier.out_proj', activation: 'none' },
  ],
};

export default roberta;
