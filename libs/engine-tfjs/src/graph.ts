import * as tf from '@tensorflow/tfjs';
import type { Activation, EncoderConfig, LinearOf, NormOf, WeightsOf } from '@fisher-merge/model';

/** The model as tensors. Every Linear's `weight` holds W^T, [in, out] (see `isMatrix`). */
export type Params = WeightsOf<tf.Tensor>;

/** Parameters stored transposed in Params: the Linear weights (2-D, not embedding tables). */
export const isMatrix = (name: string, shape: number[]) => shape.length === 2 && name.endsWith('.weight');

/** Added to the attention scores of padding keys: `(1 - mask) * lowest finite float32` (Hugging Face). */
export const LOWEST_F32 = -3.4028234663852886e38;

/**
 * x [N, in] @ W^T [in, out] + b. On the wasm backend only an untransposed 2-D matMul takes the fast path
 * (10-20x faster than with transposeA/B, which tf.matMul's own gradient uses), so the weights are kept
 * transposed and the gradient is written with explicit transposes.
 */
const affine = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, wt, b, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([x, wt]);
  return {
    value: tf.matMul(x, wt).add(b),
    gradFunc: (dy: tf.Tensor, [xs, wts]: tf.Tensor[]) => [
      tf.matMul(dy as tf.Tensor2D, wts!.transpose()),
      tf.matMul(xs!.transpose(), dy as tf.Tensor2D),
      dy.sum(0),
    ],
  };
}) as (x: tf.Tensor, wt: tf.Tensor, b: tf.Tensor) => tf.Tensor;

/** The same with the weights as constants: only x gets a gradient (mask gradients need no weight gradients). */
function frozenAffine(wt: tf.Tensor, b: tf.Tensor): (x: tf.Tensor) => tf.Tensor {
  return tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = inputs[0] as tf.Tensor2D;
    return { value: tf.matMul(x, wt as tf.Tensor2D).add(b), gradFunc: (dy: tf.Tensor) => [tf.matMul(dy as tf.Tensor2D, wt.transpose())] };
  }) as (x: tf.Tensor) => tf.Tensor;
}

/** x [..., in] -> [..., out]. */
function linear(x: tf.Tensor, l: LinearOf<tf.Tensor>, trainWeights: boolean): tf.Tensor {
  const lead = x.shape.slice(0, -1);
  const x2 = x.reshape([-1, l.inFeatures]);
  const y = trainWeights ? affine(x2, l.weight, l.bias) : frozenAffine(l.weight, l.bias)(x2);
  return y.reshape([...lead, l.outFeatures]);
}

function layerNorm(x: tf.Tensor, n: NormOf<tf.Tensor>, eps: number): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).mul(tf.rsqrt(variance.add(eps))).mul(n.weight).add(n.bias);
}

const SQRT1_2 = Math.SQRT1_2;
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export function activate(x: tf.Tensor, act: Activation): tf.Tensor {
  switch (act) {
    case 'gelu': // exact erf form; tfjs registers Erf's gradient
      return x.mul(tf.erf(x.mul(SQRT1_2)).add(1)).mul(0.5);
    case 'gelu_new':
      return x.mul(tf.tanh(x.add(x.pow(3).mul(0.044715)).mul(SQRT_2_OVER_PI)).add(1)).mul(0.5);
    case 'relu':
      return tf.relu(x);
    case 'tanh':
      return tf.tanh(x);
    case 'none':
      return x;
  }
}

/** Token-level inputs of one batch, as tensors. */
export interface Inputs {
  batchSize: number;
  seqLen: number;
  inputIds: tf.Tensor2D; // int32 [B, T]
  positionIds: tf.Tensor2D; // int32 [B, T]
  tokenTypeIds?: tf.Tensor2D; // int32 [B, T], absent when the model has no token types
  additiveMask: tf.Tensor4D; // [B, 1, 1, T]
}

/** Embedding rows looked up for each token, [B, T, E] each. Kept separate so they can be differentiated. */
export interface EmbeddingRows {
  word: tf.Tensor;
  position: tf.Tensor;
  tokenType?: tf.Tensor;
}

export function lookupRows(p: Params, x: Inputs): EmbeddingRows {
  const rows: EmbeddingRows = { word: tf.gather(p.embeddings.word, x.inputIds), position: tf.gather(p.embeddings.position, x.positionIds) };
  if (p.embeddings.tokenType !== undefined && x.tokenTypeIds !== undefined) rows.tokenType = tf.gather(p.embeddings.tokenType, x.tokenTypeIds);
  return rows;
}

/** Where a linear's input was taken: in layer `layer` (see InputGrams), or the head's input. */
export type LinearInput = { layer: number; input: 'attention' | 'attnOut' | 'ffnIn' | 'ffnOut' } | 'head';

export interface GraphOptions {
  /** [B, L, H]: scales each head's attention probabilities after the softmax. */
  headMask?: tf.Tensor;
  /** [B, L, I]: scales the FFN activations before the output dense. */
  neuronMask?: tf.Tensor;
  /** Build the weights' gradients (parameter Fisher); otherwise the weights are constants. */
  trainWeights?: boolean;
  /** Receives each layer's inputs of the linears RegMean merges, [B, T, F], and the head's input [B, F]. */
  linearInputs?: (at: LinearInput, x: tf.Tensor) => void;
}

/** Logits [B, numLabels], with the optional mask nodes. */
export function logitsFromRows(p: Params, x: Inputs, rows: EmbeddingRows, opts: GraphOptions = {}): tf.Tensor2D {
  const { headMask, neuronMask, trainWeights = false, linearInputs } = opts;
  const lin = (t: tf.Tensor, l: LinearOf<tf.Tensor>) => linear(t, l, trainWeights);
  const c: EncoderConfig = p.config;
  const { batchSize: B, seqLen: T } = x;
  const H = c.numHeads;
  const d = c.hiddenSize / H;
  let emb = rows.word.add(rows.position);
  if (rows.tokenType !== undefined) emb = emb.add(rows.tokenType);
  let h = layerNorm(emb, p.embeddings.norm, c.layerNormEps);
  if (p.embeddings.project !== undefined) h = lin(h, p.embeddings.project);

  // Slices rather than gather (its gradient needs UnsortedSegmentSum, missing on wasm) or unstack.
  const layerSlice = (m: tf.Tensor, i: number, shape: number[]) => m.slice([0, i, 0], [B, 1, m.shape[2]!]).reshape(shape);
  const split = (t: tf.Tensor) => t.reshape([B, T, H, d]).transpose([0, 2, 1, 3]);
  const scale = 1 / Math.sqrt(d);
  p.layers.forEach((l, i) => {
    const seen = (input: 'attention' | 'attnOut' | 'ffnIn' | 'ffnOut', t: tf.Tensor) => (linearInputs?.({ layer: i, input }, t), t);
    seen('attention', h);
    const q = split(lin(h, l.query));
    const k = split(lin(h, l.key));
    const v = split(lin(h, l.value));
    let probs = tf.softmax(tf.matMul(q, k, false, true).mul(scale).add(x.additiveMask));
    if (headMask !== undefined) probs = probs.mul(layerSlice(headMask, i, [B, H, 1, 1]));
    const ctx = tf.matMul(probs, v).transpose([0, 2, 1, 3]).reshape([B, T, c.hiddenSize]);
    h = layerNorm(lin(seen('attnOut', ctx), l.attnOut).add(h), l.attnNorm, c.layerNormEps);
    let a = activate(lin(seen('ffnIn', h), l.ffnIn), c.hiddenAct);
    if (neuronMask !== undefined) a = a.mul(layerSlice(neuronMask, i, [B, 1, c.intermediateSize]));
    h = layerNorm(lin(seen('ffnOut', a), l.ffnOut).add(h), l.ffnNorm, c.layerNormEps);
  });

  let out = h.slice([0, 0, 0], [B, 1, c.hiddenSize]).reshape([B, c.hiddenSize]);
  linearInputs?.('head', out);
  for (const layer of p.head) out = activate(lin(out, layer), layer.activation);
  return out as tf.Tensor2D;
}

/**
 * Each example's own loss [B]: cross-entropy with the gold class, or the squared error for regression
 * (Hugging Face's MSELoss on one example). `target` is a one-hot [B, C] or the regression targets [B].
 */
export function perExampleLoss(logits: tf.Tensor2D, target: tf.Tensor, regression: boolean): tf.Tensor1D {
  if (regression) return logits.reshape([-1]).sub(target).square() as tf.Tensor1D;
  return tf.logSoftmax(logits).mul(target).sum(-1).neg() as tf.Tensor1D;
}
