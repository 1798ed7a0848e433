import type { Activation, EncoderWeights, Linear, Norm } from '@fisher-merge/model';
import { Graph } from './graph.ts';

/**
 * forward: logits. mask: logits, per-example losses and per-example gradients to head/neuron masks (at
 * masks of one, so the masks themselves are not graph inputs). fisher-*: per-parameter sums over the batch
 * of squared per-example gradients, plus the gradient to each token's summed embeddings (scattered per
 * token id on the host). 'expected' seeds class replicas with sqrt(p). gram: the float64 Gram sums x^T x
 * of the inputs of the linears RegMean merges (GRAM_OUTPUTS), over every real token.
 */
export type GraphKind = 'forward' | 'mask' | 'fisher-empirical' | 'fisher-expected' | 'gram';

/** Output names of the gram graph: per layer l, and the head input (each example's first token after the last layer). */
export const GRAM_OUTPUTS = {
  layer: (l: number, input: 'attention' | 'attnOut' | 'ffnIn' | 'ffnOut') => `gram.${l}.${input}`,
  head: 'gram.head',
};

/** Name of the fisher graph output holding d loss_b / d (summed embeddings) of each packed token [N, E]. */
export const EMBEDDING_GRAD = 'embedding_grad';

/** Hugging Face's additive attention mask value: torch.finfo(float32).min. */
const LOWEST = -3.4028234663852886e38;

/**
 * Width the graph gives FFN activations. Rows of a multiple of 1024 floats (4 KiB: BERT-base's 3072,
 * BERT-large's 4096) start on the same L1 cache sets, and the GEMMs that read them as their left operand
 * ran at 130-150 GFLOP/s against 190-200 with 16 more columns. Those columns have zero weights and bias,
 * so they stay zero and add nothing; results are cut back to the model's width.
 */
export function ffnWidth(intermediateSize: number): number {
  return intermediateSize % 1024 === 0 ? intermediateSize + 16 : intermediateSize;
}

// One widened copy per layer, shared by the graphs of every kind built on the same weights.
const extended = new WeakMap<Linear, Linear>();

/** A copy of `l` with zero output rows appended up to `outF` and zero input columns up to `inF`. */
function zeroExtended(l: Linear, outF: number, inF: number): Linear {
  if (outF === l.outFeatures && inF === l.inFeatures) return l;
  const known = extended.get(l);
  if (known?.outFeatures === outF && known.inFeatures === inF) return known;
  const weight = new Float32Array(outF * inF);
  for (let o = 0; o < l.outFeatures; o++) weight.set(l.weight.subarray(o * l.inFeatures, (o + 1) * l.inFeatures), o * inF);
  const bias = new Float32Array(outF);
  bias.set(l.bias);
  const wide = { weight, bias, outFeatures: outF, inFeatures: inF };
  extended.set(l, wide);
  return wide;
}

/**
 * The encoder written once: forward nodes first, then (for gradient kinds) the hand-derived backward of
 * sum_b loss_b, reusing forward values. Output names of parameter Fishers are dotted EncoderWeights paths.
 * Unpadded: token-wise values are 2-D [rows, features] over the real tokens only, packed example after
 * example (rows = N, or B where only token 0 is kept), so every linear layer is one Gemm over real tokens
 * with its bias fused and the PyTorch [out, in] weight used as stored (transB). Only attention (per head,
 * [H, B, S, d]) and the per-example sums of the Fisher graphs ([B, S, F], zero rows in the padding slots)
 * gather the packed rows into slots (S: the longest example).
 */
export function buildGraph(w: EncoderWeights, kind: GraphKind): Graph {
  const c = w.config;
  const g = new Graph();
  const L = c.numLayers, H = c.numHeads, D = c.hiddenSize, dh = D / H, I = c.intermediateSize, E = c.embeddingSize;
  const Iw = ffnWidth(I);
  const masks = kind === 'mask';
  const fisher = kind === 'fisher-empirical' || kind === 'fisher-expected';
  const gram = kind === 'gram';
  const backward = kind !== 'forward' && !gram;

  const add = (a: string, b: string) => g.op('Add', [a, b]);
  const sub = (a: string, b: string) => g.op('Sub', [a, b]);
  const mul = (a: string, b: string) => g.op('Mul', [a, b]);
  const mm = (a: string, b: string) => g.op('MatMul', [a, b]);
  const tr = (x: string, perm: number[]) => g.op('Transpose', [x], { perm });
  const sq = (x: string) => g.op('Mul', [x, x]);
  const sum = (x: string, axes: number[], keepdims = 0) => g.op('ReduceSum', [x, g.ints(axes)], { keepdims });
  const mean = (x: string) => g.op('ReduceMean', [x], { axes: [-1], keepdims: 1 });
  const reshape = (x: string, shape: number[]) => g.op('Reshape', [x, g.ints(shape)]);
  const unsqueeze = (x: string, axes: number[]) => g.op('Unsqueeze', [x, g.ints(axes)]);
  const out = (name: string, value: string) => g.output(name, value, 'float');

  // Linear layers: y = scale (x W^T + b) as Gemm(transB) on the stored [out, in] weight, the scale in
  // Gemm's alpha and beta (no scaled copy of the weights); dx = scale dy W. A layer may be zero-extended
  // to wider features in the graph (ffnWidth); `model` keeps the model's own [out, in].
  interface Lin { w: string; b: string; path: string; inF: number; outF: number; model: [number, number]; scale: number }
  const linear = (l: Linear, path: string, scale = 1, outF = l.outFeatures, inF = l.inFeatures): Lin => {
    const wide = zeroExtended(l, outF, inF);
    return {
      inF,
      outF,
      model: [l.outFeatures, l.inFeatures],
      w: g.weight(`${path}.weight`, wide.weight, [outF, inF]),
      b: g.weight(`${path}.bias`, wide.bias, [outF]),
      path,
      scale,
    };
  };
  // The first `widths` entries along the trailing axes, where the graph's width is larger.
  const cut = (x: string, have: number[], widths: number[]) => {
    if (have.every((n, k) => n === widths[k])) return x;
    const axes = widths.map((_, k) => k - widths.length);
    return g.op('Slice', [x, g.ints(widths.map(() => 0)), g.ints(widths), g.ints(axes)]);
  };
  const fwd = (x: string, p: Lin) => g.op('Gemm', [x, p.w, p.b], p.scale === 1 ? { transB: 1 } : { transB: 1, alpha: p.scale, beta: p.scale });
  const back = (dy: string, p: Lin) => (p.scale === 1 ? mm(dy, p.w) : g.op('Gemm', [dy, p.w], { alpha: p.scale }));

  // Row layouts. Packed [N, F] -> [B, S, F]: gather with slot_tokens (padding slots repeat a real token,
  // which attention masks out) or, where the padding must be zero, with slot_rows on an appended zero
  // row. [B*S, F] -> packed: gather with token_slots. Token 0 only: [B, F] <-> [B, 1, F] by Reshape.
  const flat = (x: string, width: number) => reshape(x, [-1, width]);
  const zeroPadded = (x: string, width: number) => g.op('Gather', [g.op('Concat', [x, g.const(new Array<number>(width).fill(0), 'float', [1, width])], { axis: 0 }), slotRows!]);
  const perExample = (x: string, width: number, tokenZero: boolean) => (tokenZero ? reshape(x, [-1, 1, width]) : zeroPadded(x, width));
  // Per-example sums over tokens [B, F]: one MatMul with the [B, N] token-to-example indicator.
  const exampleSum = (x: string, tokenZero: boolean) => (tokenZero ? x : mm(exampleTokens!, x));
  // Per-example dW_b = dy_b^T x_b summed over tokens, squared, summed over the batch.
  const fisherLinear = (p: Lin, x: string, dy: string, tokenZero = false) => {
    if (!fisher) return;
    const dy3 = perExample(dy, p.outF, tokenZero);
    out(`${p.path}.weight`, cut(sum(sq(mm(tr(dy3, [0, 2, 1]), perExample(x, p.inF, tokenZero))), [0]), [p.outF, p.inF], p.model));
    out(`${p.path}.bias`, cut(sum(sq(exampleSum(dy, tokenZero)), [0]), [p.outF], [p.model[0]]));
  };

  interface LN { x: string; y: string; mean: string; inv: string; gamma: string; path: string; width: number; tokenZero: boolean }
  const layerNorm = (x: string, n: Norm, path: string, tokenZero = false): LN => {
    const gamma = g.weight(`${path}.weight`, n.weight, [n.weight.length]);
    const beta = g.weight(`${path}.bias`, n.bias, [n.bias.length]);
    // Mean and InvStdDev are only requested when a backward will reuse them.
    const [y, mu, inv] = g.opN('LayerNormalization', [x, gamma, beta], backward ? 3 : 1, { axis: -1, epsilon: c.layerNormEps });
    return { x, y, mean: mu, inv, gamma, path, width: n.weight.length, tokenZero };
  };
  // dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), xhat from LayerNormalization's own Mean/InvStdDev.
  const layerNormBack = (s: LN, dy: string) => {
    const xhat = mul(sub(s.x, s.mean), s.inv);
    const dxhat = mul(dy, s.gamma);
    if (fisher) {
      out(`${s.path}.weight`, sum(sq(exampleSum(mul(dy, xhat), s.tokenZero)), [0]));
      out(`${s.path}.bias`, sum(sq(exampleSum(dy, s.tokenZero)), [0]));
    }
    return mul(s.inv, sub(sub(dxhat, mean(dxhat)), mul(xhat, mean(mul(dxhat, xhat)))));
  };

  // Activation value and a lazy derivative (only built when the backward needs it).
  const activation = (x: string, a: Activation): { y: string; dy: () => string } => {
    switch (a) {
      case 'gelu': {
        if (!backward) {
          // The shape ORT's GeluFusion recognises (x * (erf(x / sqrt2) + 1) * 0.5): one fused op.
          return { y: mul(mul(x, add(g.op('Erf', [g.op('Div', [x, g.scalar(Math.SQRT2)])]), g.scalar(1))), g.scalar(0.5)), dy: () => g.scalar(1) };
        }
        // Unfused, sharing Phi(x) = (erf(x / sqrt2) + 1) / 2 with the derivative Phi(x) + x phi(x).
        const Phi = mul(add(g.op('Erf', [mul(x, g.scalar(Math.SQRT1_2))]), g.scalar(1)), g.scalar(0.5));
        const pdf = () => mul(g.op('Exp', [mul(sq(x), g.scalar(-0.5))]), g.scalar(1 / Math.sqrt(2 * Math.PI)));
        return { y: mul(x, Phi), dy: () => add(Phi, mul(x, pdf())) };
      }
      case 'gelu_new': {
        const k = Math.sqrt(2 / Math.PI);
        const t = g.op('Tanh', [mul(g.scalar(k), add(x, mul(g.scalar(0.044715), mul(x, sq(x)))))]);
        const half1t = mul(g.scalar(0.5), add(g.scalar(1), t));
        const dinner = () => mul(g.scalar(k), add(g.scalar(1), mul(g.scalar(3 * 0.044715), sq(x))));
        return { y: mul(x, half1t), dy: () => add(half1t, mul(mul(mul(g.scalar(0.5), x), sub(g.scalar(1), sq(t))), dinner())) };
      }
      case 'relu':
        return { y: g.op('Relu', [x]), dy: () => g.op('Cast', [g.op('Greater', [x, g.scalar(0)])], { to: 1 }) };
      case 'tanh': {
        const y = g.op('Tanh', [x]);
        return { y, dy: () => sub(g.scalar(1), sq(y)) };
      }
      case 'none':
        return { y: x, dy: () => g.scalar(1) };
    }
  };

  // ---- inputs: the N real tokens of B examples, packed (see packBatch in engine.ts)
  const ids = g.input('input_ids', 'int32', ['N']);
  const tokenTypes = w.embeddings.tokenType ? g.input('token_type_ids', 'int32', ['N']) : undefined;
  const positions = g.input('position_ids', 'int32', ['N']);
  const slotTokens = g.input('slot_tokens', 'int32', ['B', 'S']); // packed row of slot t of example b; padding: its token 0
  const slotMask = g.input('slot_mask', 'int32', ['B', 'S']); // 1 for a real token
  const tokenSlots = g.input('token_slots', 'int32', ['N']); // b*S + t of each packed token
  const firstTokens = g.input('first_tokens', 'int32', ['B']); // packed row of each example's token 0
  const slotRows = fisher ? g.input('slot_rows', 'int32', ['B', 'S']) : undefined; // as slot_tokens, padding: N
  const exampleTokens = backward ? g.input('example_tokens', 'float', ['B', 'N']) : undefined; // 1 where token n is in example b
  const labels = backward ? g.input('labels', 'float', ['B']) : undefined;

  // ---- embeddings
  const emb = w.embeddings;
  let e = add(
    g.op('Gather', [g.weight('embeddings.word', emb.word, [c.vocabSize, E]), ids]),
    g.op('Gather', [g.weight('embeddings.position', emb.position, [c.maxPositions, E]), positions]),
  );
  if (emb.tokenType && tokenTypes) e = add(e, g.op('Gather', [g.weight('embeddings.tokenType', emb.tokenType, [c.typeVocabSize, E]), tokenTypes]));
  const embNorm = layerNorm(e, emb.norm, 'embeddings.norm');
  const project = emb.project ? linear(emb.project, 'embeddings.project') : undefined;
  let x = project ? fwd(embNorm.y, project) : embNorm.y; // [N, D]

  // Attention runs head-major, [H,B,S,d] (token 0 only: [H,B,1,d]): rows [R, D] are transposed to
  // [H,R,d] while packed, then gathered into slots per head, so the transposes move the R real rows,
  // not the B x S slots (about twice as many on SST-2).
  const maskF = g.op('Cast', [slotMask], { to: 1 });
  const additive = unsqueeze(mul(sub(g.scalar(1), maskF), g.scalar(LOWEST)), [0, 2]); // [1,B,1,S]
  // Backward graphs zero the attention rows of padding queries, so their (repeated) inputs get no gradient.
  const realQueries = backward ? unsqueeze(maskF, [0, 3]) : undefined; // [1,B,S,1]
  const heads = (y: string, tokenZero: boolean) => {
    const rows = tr(reshape(y, [-1, H, dh]), [1, 0, 2]); // [H,R,d]
    return tokenZero ? unsqueeze(rows, [2]) : g.op('Gather', [rows, slotTokens], { axis: 1 });
  };
  const unheads = (y: string, tokenZero: boolean) => {
    const perHead = reshape(y, [H, -1, dh]); // [H, B*Sq, d]
    return flat(tr(tokenZero ? perHead : g.op('Gather', [perHead, tokenSlots], { axis: 1 }), [1, 0, 2]), D);
  };

  // x^T x in float64 from the float32 rows x [R, F]: Gemm(transA) on the cast rows, one op.
  const gramOut = (name: string, rows: string) => {
    const x64 = g.op('Cast', [rows], { to: 11 });
    g.output(name, g.op('Gemm', [x64, x64], { transA: 1 }), 'double');
  };

  // ---- encoder layers. Only token 0 reaches the head, so the last layer computes queries (and all that
  // follows: attention output, FFN) for token 0 alone; keys and values still cover every token. The gram
  // graph needs every token's inputs in every layer, the last one included.
  const layers = w.layers.map((lw, l) => {
    const last = l === L - 1 && !gram;
    const xin = x;
    const xq = last ? g.op('Gather', [x, firstTokens], { axis: 0 }) : x; // [Rq, D]
    const Q = linear(lw.query, `layers.${l}.query`, 1 / Math.sqrt(dh)); // queries scaled by 1/sqrt(d)
    const K = linear(lw.key, `layers.${l}.key`);
    const V = linear(lw.value, `layers.${l}.value`);
    const q = heads(fwd(xq, Q), last);
    const k = heads(fwd(x, K), false);
    const v = heads(fwd(x, V), false);
    const probs = g.op('Softmax', [add(mm(q, tr(k, [0, 1, 3, 2])), additive)], { axis: -1 }); // [H,B,Sq,S]
    const P = realQueries && !last ? mul(probs, realQueries) : probs;
    const ctx = unheads(mm(P, v), last);
    const O = linear(lw.attnOut, `layers.${l}.attnOut`);
    const n1 = layerNorm(add(fwd(ctx, O), xq), lw.attnNorm, `layers.${l}.attnNorm`, last);
    const Fi = linear(lw.ffnIn, `layers.${l}.ffnIn`, 1, Iw, D);
    const act = activation(fwd(n1.y, Fi), c.hiddenAct);
    const Fo = linear(lw.ffnOut, `layers.${l}.ffnOut`, 1, D, Iw);
    const n2 = layerNorm(add(fwd(act.y, Fo), n1.y), lw.ffnNorm, `layers.${l}.ffnNorm`, last);
    x = n2.y;
    if (gram) {
      gramOut(GRAM_OUTPUTS.layer(l, 'attention'), xin);
      gramOut(GRAM_OUTPUTS.layer(l, 'attnOut'), ctx);
      gramOut(GRAM_OUTPUTS.layer(l, 'ffnIn'), n1.y);
      gramOut(GRAM_OUTPUTS.layer(l, 'ffnOut'), cut(act.y, [Iw], [I]));
    }
    return { last, xin, xq, Q, K, V, q, k, v, P, ctx, O, n1, Fi, act, Fo, n2 };
  });

  if (gram) {
    gramOut(GRAM_OUTPUTS.head, g.op('Gather', [x, firstTokens], { axis: 0 }));
    return g;
  }

  // ---- head on token 0 (the last layer's rows are already one per example)
  let h = x;
  const headSteps = w.head.map((hl, k) => {
    const p = linear(hl, `head.${k}`);
    const hin = h;
    const a = activation(fwd(h, p), hl.activation);
    h = a.y;
    return { p, hin, a };
  });
  const logits = h;
  g.output('logits', logits, 'float', ['B', c.numLabels]);
  if (!backward || !labels) return g;

  // ---- loss and its gradient to the logits (the seed)
  let seed: string;
  let losses: string;
  if (c.problemType === 'regression') {
    const diff = sub(g.op('Squeeze', [logits, g.ints([1])]), labels);
    losses = sq(diff);
    seed = unsqueeze(mul(g.scalar(2), diff), [1]);
  } else {
    const classes = g.const(Array.from({ length: c.numLabels }, (_, k) => k));
    const onehot = g.op('Cast', [g.op('Equal', [unsqueeze(labels, [1]), classes])], { to: 1 }); // [B,C]
    const lse = g.op('ReduceLogSumExp', [logits], { axes: [1], keepdims: 0 });
    losses = sub(lse, sum(mul(logits, onehot), [1]));
    const p = g.op('Softmax', [logits], { axis: -1 });
    seed = sub(p, onehot);
    // Expected Fisher: each row is one (example, class) replica; weight its squared gradient by p(class).
    if (kind === 'fisher-expected') seed = mul(seed, g.op('Sqrt', [sum(mul(p, onehot), [1], 1)]));
  }

  // ---- backward through the head
  let dy = seed;
  for (let k = headSteps.length - 1; k >= 0; k--) {
    const { p, hin, a } = headSteps[k];
    const du = mul(dy, a.dy());
    if (fisher) {
      // Per-example dW_b = du_b (x) h_b, so sum_b dW_b^2 = (du^2)^T h^2.
      out(`${p.path}.weight`, mm(tr(sq(du), [1, 0]), sq(hin)));
      out(`${p.path}.bias`, sum(sq(du), [0]));
    }
    dy = back(du, p);
  }
  // dy: gradient to the last layer's token-0 output [B, D]

  // ---- backward through the layers, last to first
  const headGrads: string[] = [];
  const neuronGrads: string[] = [];
  for (let l = L - 1; l >= 0; l--) {
    const s = layers[l];
    // At masks of one, d loss / d mask is the sum of (gradient to the masked value) * (the value).
    const df = layerNormBack(s.n2, dy);
    fisherLinear(s.Fo, s.act.y, df, s.last);
    const dG = back(df, s.Fo);
    if (masks) neuronGrads[l] = cut(exampleSum(mul(dG, s.act.y), s.last), [Iw], [I]); // [B,I]
    const dpre = mul(dG, s.act.dy());
    fisherLinear(s.Fi, s.n1.y, dpre, s.last);
    const da = layerNormBack(s.n1, add(df, back(dpre, s.Fi)));
    fisherLinear(s.O, s.ctx, da, s.last);
    const dC = heads(back(da, s.O), s.last); // [H,B,Sq,d]
    const dP = mm(dC, tr(s.v, [0, 1, 3, 2])); // [H,B,Sq,S]
    if (masks) headGrads[l] = tr(sum(mul(dP, s.P), [2, 3]), [1, 0]); // [B,H]
    if (l === 0 && !fisher) break; // the mask graph is done once layer 0's mask gradients exist

    // Padding slots drop out: P is exactly 0 in their key columns and query rows, so dS is zero there.
    const dS = mul(s.P, sub(dP, sum(mul(dP, s.P), [3], 1))); // softmax backward
    const dq = unheads(mm(dS, s.k), s.last); // gradient to the scaled query
    const dk = unheads(mm(tr(dS, [0, 1, 3, 2]), s.q), false);
    const dv = unheads(mm(tr(s.P, [0, 1, 3, 2]), dC), false);
    // The query is (x W^T + b)/sqrt(d): the weight's gradient is dq/sqrt(d) times the input.
    fisherLinear(s.Q, s.xq, mul(dq, g.scalar(1 / Math.sqrt(dh))), s.last);
    fisherLinear(s.K, s.xin, dk);
    fisherLinear(s.V, s.xin, dv);
    const dxq = add(da, back(dq, s.Q));
    const dxkv = add(back(dk, s.K), back(dv, s.V));
    if (s.last) {
      // The last layer's queries (and residual) covered token 0 only: add that gradient into those rows.
      const rows = unsqueeze(g.op('Cast', [firstTokens], { to: 7 }) /* int64, as ScatterND wants */, [1]);
      dy = g.op('ScatterND', [dxkv, rows, add(g.op('Gather', [dxkv, firstTokens], { axis: 0 }), dxq)]);
    } else dy = add(dxkv, dxq);
  }

  if (masks) {
    g.output('losses', losses, 'float', ['B']);
    g.output('head_grads', g.op('Concat', headGrads.map((t) => unsqueeze(t, [1])), { axis: 1 }), 'float', ['B', L, H]);
    g.output('neuron_grads', g.op('Concat', neuronGrads.map((t) => unsqueeze(t, [1])), { axis: 1 }), 'float', ['B', L, I]);
  }
  if (fisher) {
    g.output('losses', losses, 'float', ['B']);
    if (project) {
      fisherLinear(project, embNorm.y, dy);
      dy = back(dy, project);
    }
    g.output(EMBEDDING_GRAD, layerNormBack(embNorm, dy), 'float', ['N', E]);
  }
  return g;
}
