import type { TokenBatch } from '@fisher-merge/core';

export type Activation = 'gelu' | 'gelu_new' | 'relu' | 'tanh' | 'none';

/** The shape of an encoder, read from a Hugging Face config.json through its family description. */
export interface EncoderConfig {
  family: string;
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositions: number;
  /** 0 when the family has no token types (DistilBERT). */
  typeVocabSize: number;
  /** ELECTRA may embed in a smaller size and project to hiddenSize; equals hiddenSize otherwise. */
  embeddingSize: number;
  layerNormEps: number;
  hiddenAct: Activation;
  padTokenId: number;
  /** 'absolute': position t; 'padding-offset' (RoBERTa): padTokenId + 1 + t for real tokens, padTokenId for padding. */
  positionStyle: 'absolute' | 'padding-offset';
  numLabels: number;
  problemType: 'single_label_classification' | 'regression';
}

/** A PyTorch Linear: weight [out, in] row-major, bias [out]. */
export interface Linear {
  weight: Float32Array;
  bias: Float32Array;
  outFeatures: number;
  inFeatures: number;
}

export interface Norm {
  weight: Float32Array;
  bias: Float32Array;
}

export interface LayerWeights {
  query: Linear;
  key: Linear;
  value: Linear;
  attnOut: Linear;
  attnNorm: Norm;
  ffnIn: Linear;
  ffnOut: Linear;
  ffnNorm: Norm;
}

/** One dense layer of the head applied to the first token ([CLS]/<s>), in order. */
export interface HeadLayer extends Linear {
  activation: Activation;
}

/** Canonical weights of an encoder plus its classification head, independent of the family's names. */
export interface EncoderWeights {
  config: EncoderConfig;
  embeddings: {
    word: Float32Array; // [vocab, embeddingSize]
    position: Float32Array; // [maxPositions, embeddingSize]
    tokenType?: Float32Array; // [typeVocab, embeddingSize]
    norm: Norm;
    project?: Linear; // embeddingSize -> hiddenSize
  };
  layers: LayerWeights[];
  /** Pooler (BERT, ELECTRA has none) then classifier layers, applied to the first token. */
  head: HeadLayer[];
}

/** Per-example results of one backward pass to the mask nodes. */
export interface MaskGradients {
  logits: Float32Array; // [B, numLabels]
  losses: Float32Array; // [B], each example's own loss
  headGrads: Float32Array; // [B, L, H]: d loss_b / d head_mask[b, l, h]
  neuronGrads: Float32Array; // [B, L, I]
}

/**
 * Sums over positions of x x^T (float64, row-major [in, in]) of the inputs of the linears RegMean
 * merges (shared/docs/method.md section 7), from the float32 forward pass of one batch.
 */
export interface InputGrams {
  /** Per layer, over the batch's real tokens: the attention input (query/key/value share it), the attention context (attnOut's input), the attention block's output (ffnIn's) and the activations (ffnOut's). */
  layers: { attention: Float64Array; attnOut: Float64Array; ffnIn: Float64Array; ffnOut: Float64Array }[];
  /** Over each example's first token of the last layer: the head's input (the pooler's, where the model has one). */
  head: Float64Array;
  /** Real tokens (attention mask 1): the count of every layer's sums. */
  tokens: number;
  /** Examples: the count of `head`. */
  rows: number;
}

/** A tensor engine running one model: forward, and gradients to the mask nodes. */
export interface Engine {
  readonly name: 'onnx' | 'tfjs';
  readonly config: EncoderConfig;
  /** Logits [B, numLabels]. */
  forward(batch: TokenBatch): Promise<Float32Array>;
  /** Per-example gradients of each example's own loss (batch.labels required). */
  maskGradients(batch: TokenBatch): Promise<MaskGradients>;
  /**
   * Full diagonal Fisher (Matena & Raffel): for every parameter, the sum over the batch's examples of
   * the squared per-example gradient of log p, in the layout of EncoderWeights (each array holds
   * Fisher sums instead of weights). 'empirical' uses the gold label; 'expected' sums over classes
   * weighted by the model's p(y|x) (regression: the squared-error gradient, as 'empirical').
   */
  parameterFisher(batch: TokenBatch, mode: 'empirical' | 'expected'): Promise<EncoderWeights>;
  /** Input Gram sums of the batch (labels not needed). Optional only for wrappers written before it; every engine here has it. */
  inputGrams?(batch: TokenBatch): Promise<InputGrams>;
  dispose(): Promise<void>;
}
