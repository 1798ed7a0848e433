import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import type { TokenBatch } from '@fisher-merge/core';
import { mapWeights, positionIds, type Engine, type EncoderWeights, type MaskGradients } from '@fisher-merge/model';
import { buildGraph, EMBEDDING_GRAD, type GraphKind } from './model.ts';

export interface OnnxEngineOptions {
  /** intra-op threads; default: every core. */
  threads?: number;
  /** ORT graph optimisation level; default 'all'. */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Upper bound on the bytes of one per-example weight-gradient tensor batch in the Fisher graph. */
  fisherChunkBytes?: number;
}

/** Embedding tables whose Fisher the host scatters from EMBEDDING_GRAD; every other path is a graph output. */
const HOST_SCATTERED = new Set(['embeddings.word', 'embeddings.position', 'embeddings.tokenType']);

/** Running float64 sums of per-parameter Fisher, keyed by dotted EncoderWeights path. */
class FisherSums {
  readonly sums = new Map<string, Float64Array>();
  constructor(readonly weights: EncoderWeights) {
    mapWeights(weights, (a, _shape, path) => (this.sums.set(path, new Float64Array(a.length)), a));
  }
  add(path: string, v: ArrayLike<number>): void {
    const s = this.sums.get(path);
    if (!s) throw new Error(`engine-onnx: unexpected Fisher output ${path}`);
    for (let i = 0; i < s.length; i++) s[i] += v[i];
  }
  result(): EncoderWeights {
    return mapWeights(this.weights, (_a, _shape, path) => new Float32Array(this.sums.get(path)!));
  }
}

/**
 * Adds, per row, the square of the summed gradient rows that share a table index (a token that occurs
 * twice in one example contributes once, with the sum of its two gradients), to the table's Fisher.
 */
function scatterEmbeddingFisher(acc: Float64Array, grad: Float32Array, index: Int32Array, rows: number, T: number, E: number): void {
  for (let r = 0; r < rows; r++) {
    const perId = new Map<number, Float64Array>();
    for (let t = 0; t < T; t++) {
      const id = index[r * T + t];
      let g = perId.get(id);
      if (!g) perId.set(id, (g = new Float64Array(E)));
      const off = (r * T + t) * E;
      for (let e = 0; e < E; e++) g[e] += grad[off + e];
    }
    for (const [id, g] of perId) for (let e = 0; e < E; e++) acc[id * E + e] += g[e] * g[e];
  }
}

/** Rows [from, to) of a batch (views). */
function rowsOf(b: TokenBatch, from: number, to: number): TokenBatch {
  const T = b.seqLen;
  return {
    batchSize: to - from,
    seqLen: T,
    inputIds: b.inputIds.subarray(from * T, to * T),
    attentionMask: b.attentionMask.subarray(from * T, to * T),
    tokenTypeIds: b.tokenTypeIds.subarray(from * T, to * T),
    labels: b.labels?.subarray(from, to),
  };
}

/** Each row repeated once per class, labelled 0..classes-1 (the 'expected' Fisher's replicas). */
function replicatePerClass(b: TokenBatch, classes: number): TokenBatch {
  const { batchSize: B, seqLen: T } = b;
  const rep = (a: Int32Array) => {
    const o = new Int32Array(B * classes * T);
    for (let r = 0; r < B; r++) for (let k = 0; k < classes; k++) o.set(a.subarray(r * T, (r + 1) * T), (r * classes + k) * T);
    return o;
  };
  const labels = new Float32Array(B * classes).map((_, i) => i % classes);
  return { batchSize: B * classes, seqLen: T, inputIds: rep(b.inputIds), attentionMask: rep(b.attentionMask), tokenTypeIds: rep(b.tokenTypeIds), labels };
}

export async function createOnnxEngine(weights: EncoderWeights, options: OnnxEngineOptions = {}): Promise<Engine> {
  const config = weights.config;
  const { numLayers: L, numHeads: H, intermediateSize: I, embeddingSize: E } = config;
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: options.optimization ?? 'all',
    intraOpNumThreads: options.threads ?? availableParallelism(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
  };
  // One session per graph kind, built on first use.
  const sessions = new Map<GraphKind, Promise<ort.InferenceSession>>();
  const session = (kind: GraphKind) => {
    let s = sessions.get(kind);
    if (!s) sessions.set(kind, (s = ort.InferenceSession.create(buildGraph(weights, kind), sessionOptions)));
    return s;
  };

  const run = async (kind: GraphKind, b: TokenBatch, extra: Record<string, ort.Tensor> = {}) => {
    const dims = [b.batchSize, b.seqLen];
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int32', b.inputIds, dims),
      attention_mask: new ort.Tensor('int32', b.attentionMask, dims),
      position_ids: new ort.Tensor('int32', positionIds(config, b), dims),
      ...extra,
    };
    if (weights.embeddings.tokenType) feeds.token_type_ids = new ort.Tensor('int32', b.tokenTypeIds, dims);
    if (kind !== 'forward') {
      if (!b.labels) throw new Error('engine-onnx: gradients need batch.labels');
      feeds.labels = new ort.Tensor('float32', b.labels, [b.batchSize]);
    }
    const out = await (await session(kind)).run(feeds);
    return (name: string) => out[name].data as Float32Array;
  };

  // Rows per Fisher run so that one [rows, out, in] per-example weight gradient stays under the bound.
  const largest = Math.max(...weights.layers.flatMap((l) => [l.ffnIn, l.ffnOut, l.query].map((x) => x.weight.length)), 1);
  const fisherRows = Math.max(1, Math.floor((options.fisherChunkBytes ?? 256 * 2 ** 20) / (4 * largest)));

  return {
    name: 'onnx',
    config,
    async forward(batch) {
      return (await run('forward', batch))('logits');
    },
    async maskGradients(batch): Promise<MaskGradients> {
      const B = batch.batchSize;
      const get = await run('mask', batch, {
        head_mask: new ort.Tensor('float32', new Float32Array(B * L * H).fill(1), [B, L, H]),
        neuron_mask: new ort.Tensor('float32', new Float32Array(B * L * I).fill(1), [B, L, I]),
      });
      return { logits: get('logits'), losses: get('losses'), headGrads: get('head_grads'), neuronGrads: get('neuron_grads') };
    },
    async parameterFisher(batch, mode) {
      const expected = mode === 'expected' && config.problemType !== 'regression';
      const rows = expected ? replicatePerClass(batch, config.numLabels) : batch;
      const kind: GraphKind = expected ? 'fisher-expected' : 'fisher-empirical';
      const acc = new FisherSums(weights);
      const T = rows.seqLen;
      for (let from = 0; from < rows.batchSize; from += fisherRows) {
        const chunk = rowsOf(rows, from, Math.min(rows.batchSize, from + fisherRows));
        const get = await run(kind, chunk);
        for (const path of acc.sums.keys()) if (!HOST_SCATTERED.has(path)) acc.add(path, get(path));
        const grad = get(EMBEDDING_GRAD);
        const n = chunk.batchSize;
        scatterEmbeddingFisher(acc.sums.get('embeddings.word')!, grad, chunk.inputIds, n, T, E);
        scatterEmbeddingFisher(acc.sums.get('embeddings.position')!, grad, positionIds(config, chunk), n, T, E);
        if (weights.embeddings.tokenType) scatterEmbeddingFisher(acc.sums.get('embeddings.tokenType')!, grad, chunk.tokenTypeIds, n, T, E);
      }
      return acc.result();
    },
    async dispose() {
      const all = [...sessions.values()];
      sessions.clear();
      for (const s of all) await (await s).release();
    },
  };
}

