import type { FamilyDescription } from '../family.ts';
import { BERT_CONFIG, BERT_EMBEDDINGS, BERT_LAYER } from './bert.ts';

/**
 * RobertaForSequenceClassification: BERT modules, positions counted from padding_idx + 1, and a
 * classification head (dense + tanh, out_proj) on <s> that bypasses the pooler.
 */
export const roberta: FamilyDescription = {
  name: 'roberta',
  modelTypes: ['roberta'],
  config: { ...BERT_CONFIG, padTokenId: { key: 'pad_token_id', default: 1 } },
  positionStyle: 'padding-offset',
  hasTokenTypes: true,
  encoderPrefixes: ['roberta.', ''],
  embeddings: BERT_EMBEDDINGS,
  layer: BERT_LAYER,
  pooler: { module: 'pooler.dense', activation: 'tanh' },
  headUsesPooler: false,
  classifier: [
    { module: 'classifier.dense', activation: 'tanh' },
    { module: 'classifier.out_proj', activation: 'none' },
  ],
};
