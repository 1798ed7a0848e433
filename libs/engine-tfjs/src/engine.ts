import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '@fisher-merge/core';
import { flattenWeights, mapWeights, positionIds, type EncoderConfig, type EncoderWeights, type Engine, type InputGrams, type MaskGradients } from '@fisher-merge/model';
import { initTfjsBackend, type TfjsBackendName } from './backend.ts';
import { isMatrix, LOWEST_F32, logitsFromRows, lookupRows, perExampleLoss, type EmbeddingRows, type Inputs, type LinearInput, type Params } from './graph.ts';

export interface TfjsEngineOptions {
  /** Force a backend instead of the automatic choice (native TensorFlow, then wasm, then cpu). */
  backend?: TfjsBackendName;
}

export interface TfjsEngine extends Engine {
  readonly name: 'tfjs';
  /** The tfjs backend this engine runs on. */
  readonly backend: TfjsBackendName;
}

const TABLES = ['embeddings.word', 'embeddings.position', 'embeddings.tokenType'] as const;
type TableName = (typeof TABLES)[number];
const isTable = (name: string): name is TableName => (TABLES as readonly string[]).includes(name);

function checkConfig(c: EncoderConfig): void {
  if (c.hiddenSize % c.numHeads !== 0) throw new Error(`hiddenSize ${c.hiddenSize} is not a multiple of numHeads ${c.numHeads}`);
  if (c.numLabels < 1) throw new Error(`numLabels must be >= 1, got ${c.numLabels}`);
}

/** Gather does not check indices on every backend: an out-of-range id would read garbage, not fail. */
function checkIds(ids: Int32Array, size: number, what: string): void {
  for (const id of ids) if (!(id >= 0 && id < size)) throw new Error(`${what} ${id} is outside the model's table of ${size}`);
}

function makeInputs(c: EncoderConfig, hasTokenTypes: boolean, batch: TokenBatch): Inputs {
  const { batchSize: B, seqLen: T } = batch;
  const positions = positionIds(c, batch);
  checkIds(batch.inputIds, c.vocabSize, 'token id');
  checkIds(positions, c.maxPositions, 'position id');
  if (hasTokenTypes) checkIds(batch.tokenTypeIds, c.typeVocabSize, 'token type id');
  const additive = new Float32Array(B * T);
  for (let i = 0; i < B * T; i++) additive[i] = batch.attentionMask[i] ? 0 : LOWEST_F32;
  const x: Inputs = {
    batchSize: B,
    seqLen: T,
    inputIds: tf.tensor2d(batch.inputIds, [B, T], 'int32'),
    positionIds: tf.tensor2d(positions, [B, T], 'int32'),
    additiveMask: tf.tensor4d(additive, [B, 1, 1, T]),
  };
  if (hasTokenTypes) x.tokenTypeIds = tf.tensor2d(batch.tokenTypeIds, [B, T], 'int32');
  return x;
}

function disposeInputs(x: Inputs): void {
  tf.dispose([x.inputIds, x.positionIds, x.additiveMask]);
  if (x.tokenTypeIds) x.tokenTypeIds.dispose();
}

function requireLabels(batch: TokenBatch): Float32Array {
  if (batch.labels === undefined) throw new Error('this batch has no labels: gradients need the gold labels');
  if (batch.labels.length !== batch.batchSize) throw new Error(`labels has ${batch.labels.length} entries for ${batch.batchSize} examples`);
  return batch.labels;
}

/** One-hot targets [B, C] for classification; the raw targets [B] for regression. */
function targetTensor(c: EncoderConfig, labels: Float32Array): tf.Tensor {
  if (c.problemType === 'regression') return tf.tensor1d(labels);
  const C = c.numLabels;
  const onehot = new Float32Array(labels.length * C);
  labels.forEach((y, b) => {
    const k = Math.round(y);
    if (!(k >= 0 && k < C)) throw new Error(`label ${y} of example ${b} is not a class of ${C}`);
    onehot[b * C + k] = 1;
  });
  return tf.tensor2d(onehot, [labels.length, C]);
}

/** Example b alone, cut after its last attended token (trailing padding only changes nothing but cost). */
function singleExample(batch: TokenBatch, b: number): TokenBatch {
  const T = batch.seqLen;
  let len = T;
  while (len > 1 && !batch.attentionMask[b * T + len - 1]) len--;
  const row = <A extends Int32Array>(a: A) => a.slice(b * T, b * T + len) as A;
  const one: TokenBatch = {
    batchSize: 1,
    seqLen: len,
    inputIds: row(batch.inputIds),
    attentionMask: row(batch.attentionMask),
    tokenTypeIds: row(batch.tokenTypeIds),
  };
  if (batch.labels) one.labels = batch.labels.slice(b, b + 1);
  return one;
}

/** sum over the rows r of x [R, F] with real(r) of x_r x_r^T, in float64 [F, F]. */
function gramOf(x: Float32Array, F: number, real: (r: number) => boolean): Float64Array {
  const gram = new Float64Array(F * F);
  for (let r = 0; r < x.length / F; r++) {
    if (!real(r)) continue;
    const row = x.subarray(r * F, (r + 1) * F);
    for (let i = 0; i < F; i++) {
      const xi = row[i]!;
      for (let j = i; j < F; j++) gram[i * F + j]! += xi * row[j]!;
    }
  }
  for (let i = 0; i < F; i++) for (let j = 0; j < i; j++) gram[i * F + j] = gram[j * F + i]!;
  return gram;
}

/**
 * The reference engine: the encoder with its mask nodes, differentiated by tfjs autodiff.
 * The weight arrays may be shared with the backend (the cpu backend does not copy): do not mutate them
 * while the engine lives.
 */
export async function createTfjsEngine(weights: EncoderWeights, opts: TfjsEngineOptions = {}): Promise<TfjsEngine> {
  const backend = await initTfjsBackend(opts.backend);
  const config = weights.config;
  checkConfig(config);
  if (weights.layers.length !== config.numLayers) throw new Error(`config says ${config.numLayers} layers, weights have ${weights.layers.length}`);
  const params: Params = mapWeights(weights, (a, shape, name) =>
    isMatrix(name, shape) ? tf.tidy(() => tf.tensor2d(a, shape as [number, number]).transpose()) : tf.tensor(a, shape, 'float32'),
  );
  const hasTokenTypes = params.embeddings.tokenType !== undefined;
  const regression = config.problemType === 'regression';
  const { numLayers: L, numHeads: H, intermediateSize: I } = config;
  let disposed = false;
  // tfjs has one global backend: put this engine's back if another engine switched it.
  const live = async () => {
    if (disposed) throw new Error('the tfjs engine has been disposed');
    if (tf.getBackend() !== backend) await tf.setBackend(backend);
  };

  async function forward(batch: TokenBatch): Promise<Float32Array> {
    await live();
    const x = makeInputs(config, hasTokenTypes, batch);
    try {
      const logits = tf.tidy(() => logitsFromRows(params, x, lookupRows(params, x)));
      const out = (await logits.data()) as Float32Array;
      logits.dispose();
      return out;
    } finally {
      disposeInputs(x);
    }
  }

  async function maskGradients(batch: TokenBatch): Promise<MaskGradients> {
    await live();
    const labels = requireLabels(batch);
    const B = batch.batchSize;
    const x = makeInputs(config, hasTokenTypes, batch);
    try {
      const results = tf.tidy(() => {
        const target = targetTensor(config, labels);
        const rows = lookupRows(params, x);
        let logits: tf.Tensor2D | undefined;
        // Per-example masks of ones: the gradient of the summed loss w.r.t. mask[b] is example b's own gradient.
        const [headGrads, neuronGrads] = tf.grads((hm: tf.Tensor, nm: tf.Tensor) => {
          logits = tf.keep(logitsFromRows(params, x, rows, { headMask: hm, neuronMask: nm }));
          return perExampleLoss(logits, target, regression).sum();
        })([tf.ones([B, L, H]), tf.ones([B, L, I])]);
        // Kept past the gradient scope; returning it hands it to the caller's disposal below.
        const kept = logits!;
        return [kept, perExampleLoss(kept, target, regression), headGrads!, neuronGrads!];
      });
      const [logits, losses, headGrads, neuronGrads] = (await Promise.all(results.map((t) => t.data()))) as Float32Array[];
      tf.dispose(results);
      return { logits: logits!, losses: losses!, headGrads: headGrads!, neuronGrads: neuronGrads! };
    } finally {
      disposeInputs(x);
    }
  }

  async function parameterFisher(batch: TokenBatch, mode: 'empirical' | 'expected'): Promise<EncoderWeights> {
    await live();
    requireLabels(batch);
    const names: string[] = [];
    const dense: tf.Tensor[] = [];
    const transposed: boolean[] = [];
    mapWeights(params, (t, shape, name) => {
      if (!isTable(name)) {
        names.push(name);
        dense.push(t);
        transposed.push(isMatrix(name, shape));
      }
    });
    let acc: tf.Tensor[] = dense.map((t) => tf.zerosLike(t));
    const E = config.embeddingSize;
    const tableFisher: Record<TableName, Float32Array | undefined> = {
      'embeddings.word': new Float32Array(config.vocabSize * E),
      'embeddings.position': new Float32Array(config.maxPositions * E),
      'embeddings.tokenType': hasTokenTypes ? new Float32Array(config.typeVocabSize * E) : undefined,
    };

    // Squared gradient of one example's loss, weighted; embedding tables get their rows' gradients only.
    async function accumulate(x: Inputs, ids: Record<TableName, Int32Array | undefined>, target: tf.Tensor, weight: number): Promise<void> {
      const out = tf.tidy(() => {
        const rows = lookupRows(params, x);
        const rowList = [rows.word, rows.position, ...(rows.tokenType ? [rows.tokenType] : [])];
        const n = dense.length;
        const grads = tf.grads((...args: tf.Tensor[]) => {
          let i = 0;
          const p = mapWeights(params, (t, _s, name) => (isTable(name) ? t : args[i++]!));
          const r: EmbeddingRows = { word: args[n]!, position: args[n + 1]! };
          if (rows.tokenType) r.tokenType = args[n + 2]!;
          return perExampleLoss(logitsFromRows(p, x, r, { trainWeights: true }), target, regression).sum();
        })([...dense, ...rowList]);
        const next = acc.map((a, k) => a.add(grads[k]!.square().mul(weight)));
        return { next, rowGrads: grads.slice(n) };
      });
      tf.dispose(acc);
      acc = out.next;
      const rowData = await Promise.all(out.rowGrads.map((g) => g.data()));
      tf.dispose(out.rowGrads);
      TABLES.forEach((name, k) => {
        const tableIds = ids[name];
        const fisher = tableFisher[name];
        if (!tableIds || !fisher) return;
        // A row used at several positions gets the sum of their gradients before squaring.
        const perRow = new Map<number, Float64Array>();
        const g = rowData[k]!;
        tableIds.forEach((id, t) => {
          let s = perRow.get(id);
          if (!s) perRow.set(id, (s = new Float64Array(E)));
          for (let e = 0; e < E; e++) s[e]! += g[t * E + e]!;
        });
        for (const [id, s] of perRow) for (let e = 0; e < E; e++) fisher[id * E + e]! += weight * s[e]! * s[e]!;
      });
    }

    try {
      for (let b = 0; b < batch.batchSize; b++) await addExample(singleExample(batch, b));
      // Back to the PyTorch layout [out, in] for the Linear weights.
      const final = acc.map((a, k) => (transposed[k] ? tf.tidy(() => a.transpose()) : a));
      const denseData = await Promise.all(final.map((a) => a.data() as Promise<Float32Array>));
      tf.dispose(final);
      const byName = new Map(names.map((name, k) => [name, denseData[k]!]));
      return mapWeights(params, (_t, _shape, name) => (isTable(name) ? tableFisher[name]! : byName.get(name)!));
    } finally {
      tf.dispose(acc);
    }

    async function addExample(one: TokenBatch): Promise<void> {
      const x = makeInputs(config, hasTokenTypes, one);
      const ids: Record<TableName, Int32Array | undefined> = {
        'embeddings.word': one.inputIds,
        'embeddings.position': positionIds(config, one),
        'embeddings.tokenType': hasTokenTypes ? one.tokenTypeIds : undefined,
      };
      try {
        if (regression || mode === 'empirical') {
          const target = targetTensor(config, one.labels!);
          await accumulate(x, ids, target, 1).finally(() => target.dispose());
        } else {
          // Expected Fisher: sum over classes of p(y|x) times the squared gradient of log p(y|x).
          const probsT = tf.tidy(() => tf.softmax(logitsFromRows(params, x, lookupRows(params, x))));
          const probs = (await probsT.data()) as Float32Array;
          probsT.dispose();
          for (let y = 0; y < config.numLabels; y++) {
            const target = targetTensor(config, Float32Array.of(y));
            await accumulate(x, ids, target, probs[y]!).finally(() => target.dispose());
          }
        }
      } finally {
        disposeInputs(x);
      }
    }
  }

  /** The forward pass's linear inputs, read back and summed on the host in float64 over the real tokens. */
  async function inputGrams(batch: TokenBatch): Promise<InputGrams> {
    await live();
    const x = makeInputs(config, hasTokenTypes, batch);
    const seen: { at: LinearInput; x: tf.Tensor }[] = [];
    try {
      tf.tidy(() => logitsFromRows(params, x, lookupRows(params, x), { linearInputs: (at, t) => seen.push({ at, x: tf.keep(t) }) }));
      const layers = Array.from({ length: L }, () => ({}) as InputGrams['layers'][number]);
      let head: Float64Array | undefined;
      for (const { at, x: t } of seen) {
        const F = t.shape[t.shape.length - 1]!;
        const data = (await t.data()) as Float32Array;
        if (at === 'head') head = gramOf(data, F, () => true);
        else layers[at.layer]![at.input] = gramOf(data, F, (r) => batch.attentionMask[r] !== 0);
      }
      const tokens = batch.attentionMask.reduce((n, m) => n + (m !== 0 ? 1 : 0), 0);
      return { layers, head: head!, tokens, rows: batch.batchSize };
    } finally {
      tf.dispose(seen.map((s) => s.x));
      disposeInputs(x);
    }
  }

  return {
    name: 'tfjs',
    backend,
    config,
    forward,
    maskGradients,
    parameterFisher,
    inputGrams,
    async dispose() {
      if (disposed) return;
      disposed = true;
      tf.dispose(flattenWeights(params));
    },
  };
}
