import type { LayerRole, ModuleKind } from './schema.ts';
import type { Activation } from './types.ts';

/** A config.json value: read from `key` (falling back to `default`, Hugging Face's config default) or fixed by the family. */
export type ConfigValue<T> = { key: string; default?: T } | { value: T };

/** One dense layer of a head: a module path (its `.weight`/`.bias`) and the activation applied after it. */
export interface HeadModule {
  module: string;
  activation: Activation;
}

/** Other names checkpoints give a parameter of a kind of module, tried after `weight` / `bias`. */
export type ParamAliases = { readonly [K in ModuleKind]?: { readonly weight?: readonly string[]; readonly bias?: readonly string[] } };

/**
 * An encoder architecture as data: one file in `families/` default-exports one of these, and the
 * loader finds it there. Module paths are relative to the encoder prefix (embeddings, layers,
 * pooler) or to the checkpoint root (classifier); parameters are `<module>.weight` / `<module>.bias`
 * (or an alias). Layer paths contain `{l}` for the layer index.
 */
export interface FamilyDescription {
  name: string;
  /** config.json `model_type` values this description reads. */
  modelTypes: readonly string[];
  /** config.json `architectures` class names start with one of these (Bert: BertModel, BertForMaskedLM, ...). */
  architecturePrefixes: readonly string[];
  config: {
    numLayers: ConfigValue<number>;
    hiddenSize: ConfigValue<number>;
    numHeads: ConfigValue<number>;
    intermediateSize: ConfigValue<number>;
    vocabSize: ConfigValue<number>;
    maxPositions: ConfigValue<number>;
    /** Ignored (0) when the family has no token types. */
    typeVocabSize: ConfigValue<number>;
    /** Absent: the embedding size is the hidden size. */
    embeddingSize?: ConfigValue<number>;
    layerNormEps: ConfigValue<number>;
    hiddenAct: ConfigValue<string>;
    padTokenId: ConfigValue<number>;
  };
  positionStyle: 'absolute' | 'padding-offset';
  hasTokenTypes: boolean;
  /** Tried in order; the first under which the embeddings and layer 0 exist is the checkpoint's prefix. */
  encoderPrefixes: readonly string[];
  paramAliases: ParamAliases;
  embeddings: {
    word: string;
    position: string;
    tokenType?: string;
    norm: string;
    /** Linear embeddingSize -> hiddenSize, present when the two differ (ELECTRA). */
    project?: string;
  };
  layer: Readonly<Record<LayerRole, string>>;
  /** Pooler on the first token, part of the encoder (merged with it) when the checkpoint has it. */
  pooler?: HeadModule;
  /** Whether the task head runs on the pooler's output (BERT) or on the first token directly. */
  headUsesPooler: boolean;
  /** Task classifier layers, in order; the last one outputs numLabels. Other heads (pre-training, LM) are not loaded. */
  classifier: readonly HeadModule[];
}
