// RoBERTa's byte-level BPE through the data plane's loadTokenizer, on a hand-built tokenizer.json in
// roberta-base's layout (test/fixtures/families/roberta, written by make_fixtures.py). Expected ids are
// derived by hand from Hugging Face's documented behaviour: the GPT-2 split regex, bytes mapped to
// printable characters (space -> U+0120), merges applied lowest rank first, and RobertaTokenizer's
// framing `<s> A </s>` / `<s> A </s></s> B </s>` with all token type ids 0. The encodings are the
// input_ids of the RoBERTa reference batch, so text -> ids -> logits is checked end to end.
import { describe, expect, it } from 'vitest';
import type { TokenBatch } from '@fisher-merge/core';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { loadTokenizer } from '@fisher-merge/data';
import { loadEncoder, positionIds } from '@fisher-merge/model';
import { createOnnxEngine } from '@fisher-merge/engine-onnx';

const DIR = 'test/fixtures/families/roberta';
// <s>0 <pad>1 </s>2 h4 e5 l6 o7 w8 r9 d10 Ġ11 a12 b13 ll14 he15 hell16 hello17 Ġw18 or19 Ġwor20 Ġworl21 Ġworld22
const EXAMPLES: Array<{ a: string; b?: string; ids: number[] }> = [
  { a: 'hello world', b: 'world', ids: [0, 17, 22, 2, 2, 8, 19, 6, 10, 2] }, // "Ġw or" is no merge: w or l d
  { a: 'hell', ids: [0, 16, 2] }, // l+l (rank 0) before h+e, then he+ll
  { a: 'hello  world', b: ' hell', ids: [0, 17, 11, 22, 2, 2, 11, 16, 2] }, // \s+(?!\S) leaves a lone Ġ; no Ġ+hell merge
  { a: 'a b', b: 'ab', ids: [0, 12, 11, 13, 2, 2, 12, 13, 2] },
];

describe('RoBERTa byte-level BPE tokenizer (loadTokenizer)', async () => {
  const tokenizer = await loadTokenizer(DIR);

  it('reads the pad id and RobertaProcessing special-token counts (2 single, 4 pair)', () => {
    expect(tokenizer.padTokenId).toBe(1);
    expect(tokenizer.specialTokenCount(false)).toBe(2);
    expect(tokenizer.specialTokenCount(true)).toBe(4);
  });

  it('splits, byte-maps and merges texts as GPT-2/RoBERTa BPE does', () => {
    expect(tokenizer.textIds('hello world')).toEqual([17, 22]);
    expect(tokenizer.textIds(' hello')).toEqual([11, 17]);
    expect(tokenizer.textIds('world')).toEqual([8, 19, 6, 10]);
    expect(tokenizer.textIds('hello   world')).toEqual([17, 11, 11, 22]);
  });

  it.each(EXAMPLES)('frames %o as <s> a </s>(</s> b </s>) with token type ids 0', ({ a, b, ids }) => {
    const enc = tokenizer.encode(a, b);
    expect(enc.ids).toEqual(ids);
    expect(enc.typeIds).toEqual(ids.map(() => 0));
  });

  it('truncates pairs longest first, cutting the second text on ties', () => {
    // Budget 7 - 4 = 3 for [hello, Ġworld] + [w, or, l, d]: the second loses 2, then on the 2-2 tie again.
    expect(tokenizer.encode('hello world', 'world', 7).ids).toEqual([0, 17, 22, 2, 2, 8, 2]);
    expect(tokenizer.encode('hello world', undefined, 3).ids).toEqual([0, 17, 2]);
  });

  it('tokenized, right-padded examples are the reference batch: same ids, positions and logits', async () => {
    const ref = readSafetensors(`${DIR}/reference.safetensors`);
    const [B, T] = ref.info('input_ids').shape as [number, number];
    expect(B).toBe(EXAMPLES.length);
    const inputIds = new Int32Array(B * T).fill(tokenizer.padTokenId);
    const attentionMask = new Int32Array(B * T);
    EXAMPLES.forEach(({ a, b }, i) => {
      const { ids } = tokenizer.encode(a, b);
      inputIds.set(ids, i * T);
      attentionMask.fill(1, i * T, i * T + ids.length);
    });
    const want = (name: string) => Array.from(ref.tensor(name).data as BigInt64Array, Number);
    expect(Array.from(inputIds)).toEqual(want('input_ids'));
    expect(Array.from(attentionMask)).toEqual(want('attention_mask'));

    const model = await loadEncoder(DIR);
    const batch: TokenBatch = { batchSize: B, seqLen: T, inputIds, attentionMask, tokenTypeIds: new Int32Array(B * T) };
    // RoBERTa positions: padding_idx (1) + running count of non-pad tokens; pads stay at 1.
    expect(Array.from(positionIds(model.config, batch).subarray(T, 2 * T))).toEqual([2, 3, 4, 1, 1, 1, 1, 1, 1, 1]);
    const engine = await createOnnxEngine(model.weights, { threads: 1 });
    try {
      const logits = await engine.forward(batch);
      const wantLogits = ref.float64('logits');
      for (let i = 0; i < wantLogits.length; i++) expect(Math.abs(logits[i]! - wantLogits[i]!)).toBeLessThanOrEqual(1e-4);
    } finally {
      await engine.dispose();
    }
  });
});
