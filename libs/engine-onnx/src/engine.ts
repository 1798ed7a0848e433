import { availableParallelism } from 'node:os';
import './no-telemetry.ts';
import * as ort from 'onnxruntime-node';
import type { TokenBatch } from '@fisher-merge/core';
import { mapWeights, positionIds, type Engine, type EncoderConfig, type EncoderWeights, type InputGrams, type MaskGradients } from '@fisher-merge/model';
import { buildGraph, EMBEDDING_GRAD, ffnWidth, GRAM_OUTPUTS, type GraphKind } from './model.ts';

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
 * Adds, per example, the square of the summed gradient rows that share a table index (a token that occurs
 * twice in one example contributes once, with the sum of its two gradients), to the table's Fisher.
 */
function scatterEmbeddingFisher(acc: Float64Array, grad: Float32Array, index: Int32Array, starts: Int32Array, E: number): void {
  for (let r = 0; r + 1 < starts.length; r++) {
    const perId = new Map<number, Float64Array>();
    for (let n = starts[r]; n < starts[r + 1]; n++) {
      const id = index[n];
      let g = perId.get(id);
      if (!g) perId.set(id, (g = new Float64Array(E)));
      for (let e = 0; e < E; e++) g[e] += grad[n * E + e];
    }
    for (const [id, g] of perId) for (let e = 0; e < E; e++) acc[id * E + e] += g[e] * g[e];
  }
}

/** The real tokens (attention mask 1) of some rows of a batch, packed row after row: the graphs' inputs. */
interface PackedRows {
  rows: number;
  tokens: number;
  /** Longest row: the attention's slot count S. */
  slots: number;
  inputIds: Int32Array; // [N]
  tokenTypeIds: Int32Array; // [N]
  positionIds: Int32Array; // [N]
  /** First packed token of each row, and N at the end [rows + 1]. */
  starts: Int32Array;
  slotTokens: Int32Array; // [rows, S]: packed token in slot t, or the row's token 0 past its end
  slotRows: Int32Array; // [rows, S]: as slotTokens, or N (a zero row) past the row's end
  slotMask: Int32Array; // [rows, S]
  exampleTokens: Float32Array; // [rows, N]: 1 where token n belongs to row r
  tokenSlots: Int32Array; // [N]: r * S + t
  labels?: Float32Array; // [rows]
}

/** Real tokens (attention mask 1) of each row of `b`. */
function rowLengths(b: TokenBatch): Int32Array {
  const T = b.seqLen, mask = b.attentionMask;
  const lengths = new Int32Array(b.batchSize);
  for (let r = 0; r < b.batchSize; r++) for (let t = 0; t < T; t++) if (mask[r * T + t]) lengths[r]++;
  return lengths;
}

/**
 * Packs `order` (row indices of `b`) in that order. Position ids follow the family's rule on the padded
 * rows, so they are what the padded model would see. A row's token 0 feeds the head, so it must be real.
 */
function packRows(config: EncoderConfig, b: TokenBatch, order: ArrayLike<number>, lengths = rowLengths(b)): PackedRows {
  const T = b.seqLen, mask = b.attentionMask;
  const positions = positionIds(config, b);
  const rows = order.length;
  const starts = new Int32Array(rows + 1);
  let slots = 0;
  for (let i = 0; i < rows; i++) {
    const r = order[i];
    if (!mask[r * T]) throw new Error(`engine-onnx: row ${r} of the batch starts with a padding token (attention_mask 0); rows must be right-padded`);
    starts[i + 1] = starts[i] + lengths[r];
    slots = Math.max(slots, lengths[r]);
  }
  const N = starts[rows];
  const p: PackedRows = {
    rows,
    tokens: N,
    slots,
    inputIds: new Int32Array(N),
    tokenTypeIds: new Int32Array(N),
    positionIds: new Int32Array(N),
    starts,
    slotTokens: new Int32Array(rows * slots),
    slotRows: new Int32Array(rows * slots).fill(N),
    slotMask: new Int32Array(rows * slots),
    exampleTokens: new Float32Array(rows * N),
    tokenSlots: new Int32Array(N),
    labels: b.labels && Float32Array.from(order, (r) => b.labels![r]),
  };
  for (let i = 0; i < rows; i++) {
    const r = order[i];
    p.slotTokens.fill(starts[i], i * slots, (i + 1) * slots);
    p.exampleTokens.fill(1, i * N + starts[i], i * N + starts[i + 1]);
    for (let t = 0, n = starts[i]; t < T; t++) {
      const src = r * T + t;
      if (!mask[src]) continue;
      const slot = i * slots + (n - starts[i]);
      p.inputIds[n] = b.inputIds[src];
      p.tokenTypeIds[n] = b.tokenTypeIds[src];
      p.positionIds[n] = positions[src];
      p.slotTokens[slot] = n;
      p.slotRows[slot] = n;
      p.slotMask[slot] = 1;
      p.tokenSlots[n] = slot;
      n++;
    }
  }
  return p;
}

const inOrder = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

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

/** Row indices by increasing length, so that chunks of neighbours pad little. */
const byLength = (lengths: Int32Array): Int32Array => inOrder(lengths.length).sort((x, y) => lengths[x] - lengths[y] || x - y);

export async function createOnnxEngine(weights: EncoderWeights, options: OnnxEngineOptions = {}): Promise<Engine> {
  const config = weights.config;
  const E = config.embeddingSize;
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: options.optimization ?? 'all',
    intraOpNumThreads: options.threads ?? availableParallelism(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
  };
  // One session per graph kind, built on first use, with its weight feeds (views of `weights`, not copies).
  interface Compiled { session: ort.InferenceSession; weightFeeds: Record<string, ort.Tensor> }
  const sessions = new Map<GraphKind, Promise<Compiled>>();
  const compile = async (kind: GraphKind): Promise<Compiled> => {
    const graph = buildGraph(weights, kind);
    const weightFeeds = Object.fromEntries([...graph.weights].map(([name, { data, dims }]) => [name, new ort.Tensor('float32', data, dims)]));
    return { session: await ort.InferenceSession.create(graph.toBytes(), sessionOptions), weightFeeds };
  };
  const session = (kind: GraphKind) => {
    let s = sessions.get(kind);
    if (!s) sessions.set(kind, (s = compile(kind)));
    return s;
  };

  const run = async (kind: GraphKind, p: PackedRows) => {
    const { rows: B, tokens: N, slots: S } = p;
    if (kind !== 'forward' && kind !== 'gram' && !p.labels) throw new Error('engine-onnx: gradients need batch.labels');
    // Every input a graph kind may take; each session is fed the ones it declares.
    const inputs: Record<string, () => ort.Tensor> = {
      input_ids: () => new ort.Tensor('int32', p.inputIds, [N]),
      token_type_ids: () => new ort.Tensor('int32', p.tokenTypeIds, [N]),
      position_ids: () => new ort.Tensor('int32', p.positionIds, [N]),
      slot_tokens: () => new ort.Tensor('int32', p.slotTokens, [B, S]),
      slot_rows: () => new ort.Tensor('int32', p.slotRows, [B, S]),
      slot_mask: () => new ort.Tensor('int32', p.slotMask, [B, S]),
      token_slots: () => new ort.Tensor('int32', p.tokenSlots, [N]),
      first_tokens: () => new ort.Tensor('int32', p.starts.subarray(0, B), [B]),
      example_tokens: () => new ort.Tensor('float32', p.exampleTokens, [B, N]),
      labels: () => new ort.Tensor('float32', p.labels!, [B]),
    };
    const { session: s, weightFeeds } = await session(kind);
    const feeds: Record<string, ort.Tensor> = { ...weightFeeds };
    for (const name of s.inputNames) feeds[name] ??= inputs[name]!();
    const out = await s.run(feeds);
    // Outputs are float32 but for the gram graph's float64 sums.
    return Object.assign((name: string) => out[name].data as Float32Array, { float64: (name: string) => out[name].data as Float64Array });
  };

  // Rows per Fisher run so that one [rows, out, in] per-example weight gradient (at the graph's FFN
  // width) stays under the bound.
  const largest = Math.max(ffnWidth(config.intermediateSize) * config.hiddenSize, config.hiddenSize * config.hiddenSize, 1);
  const fisherRows = Math.max(1, Math.floor((options.fisherChunkBytes ?? 256 * 2 ** 20) / (4 * largest)));

  return {
    name: 'onnx',
    config,
    async forward(batch) {
      return (await run('forward', packRows(config, batch, inOrder(batch.batchSize))))('logits');
    },
    async maskGradients(batch): Promise<MaskGradients> {
      const get = await run('mask', packRows(config, batch, inOrder(batch.batchSize)));
      return { logits: get('logits'), losses: get('losses'), headGrads: get('head_grads'), neuronGrads: get('neuron_grads') };
    },
    async parameterFisher(batch, mode) {
      const expected = mode === 'expected' && config.problemType !== 'regression';
      const rows = expected ? replicatePerClass(batch, config.numLabels) : batch;
      const kind: GraphKind = expected ? 'fisher-expected' : 'fisher-empirical';
      const acc = new FisherSums(weights);
      // Fisher sums do not depend on row order: chunks of similar lengths pad the per-example sums least.
      const lengths = rowLengths(rows);
      const order = byLength(lengths);
      for (let from = 0; from < order.length; from += fisherRows) {
        const chunk = packRows(config, rows, order.subarray(from, from + fisherRows), lengths);
        const get = await run(kind, chunk);
        for (const path of acc.sums.keys()) if (!HOST_SCATTERED.has(path)) acc.add(path, get(path));
        const grad = get(EMBEDDING_GRAD);
        scatterEmbeddingFisher(acc.sums.get('embeddings.word')!, grad, chunk.inputIds, chunk.starts, E);
        scatterEmbeddingFisher(acc.sums.get('embeddings.position')!, grad, chunk.positionIds, chunk.starts, E);
        if (weights.embeddings.tokenType) scatterEmbeddingFisher(acc.sums.get('embeddings.tokenType')!, grad, chunk.tokenTypeIds, chunk.starts, E);
      }
      return acc.result();
    },
    async inputGrams(batch): Promise<InputGrams> {
      const p = packRows(config, batch, inOrder(batch.batchSize));
      const get = await run('gram', p);
      const layers = Array.from({ length: config.numLayers }, (_, l) => ({
        attention: get.float64(GRAM_OUTPUTS.layer(l, 'attention')),
        attnOut: get.float64(GRAM_OUTPUTS.layer(l, 'attnOut')),
        ffnIn: get.float64(GRAM_OUTPUTS.layer(l, 'ffnIn')),
        ffnOut: get.float64(GRAM_OUTPUTS.layer(l, 'ffnOut')),
      }));
      return { layers, head: get.float64(GRAM_OUTPUTS.head), tokens: p.tokens, rows: p.rows };
    },
    async dispose() {
      const all = [...sessions.values()];
      sessions.clear();
      for (const s of all) await (await s).session.release();
    },
  };
}

