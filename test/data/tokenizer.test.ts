import { copyFileSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { GLUE_TASKS, customTask, loadTokenizer } from '@fisher-merge/data';
import { modelDir, tempDir } from './helpers.ts';

const dir = tempDir();
const words = (n: number): string => Array.from({ length: n }, () => 'word').join(' ');

describe('tokenizer', () => {
  it('truncates longest-first one token at a time, ties cut the second text', async () => {
    const tokenizer = await loadTokenizer(modelDir('rte'));
    const lengths = (a: number, b: number, maxLength: number): [number, number] => {
      const { typeIds } = tokenizer.encode(words(a), words(b), maxLength);
      const second = typeIds.filter((t) => t === 1).length - 1;
      return [typeIds.length - 3 - second, second];
    };
    expect(lengths(5, 10, 12)).toEqual([5, 4]);
    expect(lengths(10, 5, 12)).toEqual([5, 4]);
    expect(lengths(6, 6, 12)).toEqual([5, 4]);
    expect(lengths(100, 3, 128)).toEqual([100, 3]);
    expect(lengths(200, 200, 128)).toEqual([63, 62]);
    expect(tokenizer.encode(words(300), undefined).ids).toHaveLength(128);
    const empty = tokenizer.encode('hello', '', 128);
    expect(empty.ids).toEqual([101, 7592, 102, 102]);
    expect(empty.typeIds).toEqual([0, 0, 0, 1]);
    expect(tokenizer.padTokenId).toBe(0);
  });

  it("follows a RoBERTa post_processor: <s> a </s></s> b </s>, no token types", async () => {
    const roberta = path.join(dir, 'roberta-like');
    mkdirSync(roberta);
    const json = JSON.parse(readFileSync(path.join(modelDir('rte'), 'tokenizer.json'), 'utf8'));
    json.post_processor = { type: 'RobertaProcessing', sep: ['[SEP]', 102], cls: ['[CLS]', 101], trim_offsets: true, add_prefix_space: false };
    writeFileSync(path.join(roberta, 'tokenizer.json'), JSON.stringify(json));
    copyFileSync(path.join(modelDir('rte'), 'tokenizer_config.json'), path.join(roberta, 'tokenizer_config.json'));
    const tokenizer = await loadTokenizer(roberta);
    expect(tokenizer.encode('hello', 'world')).toEqual({ ids: [101, 7592, 102, 102, 2088, 102], typeIds: [0, 0, 0, 0, 0, 0] });
    expect(tokenizer.encode('hello', undefined)).toEqual({ ids: [101, 7592, 102], typeIds: [0, 0, 0] });
    expect(tokenizer.encode(words(10), words(10), 10).ids).toHaveLength(10);
  });
});

describe('tasks', () => {
  it('GLUE presets use the Hugging Face column names', () => {
    expect(GLUE_TASKS.mnli).toMatchObject({ textColumn: 'premise', textPairColumn: 'hypothesis', numLabels: 3, labelKind: 'class' });
    expect(GLUE_TASKS.stsb).toMatchObject({ textColumn: 'sentence1', textPairColumn: 'sentence2', numLabels: 1, labelKind: 'regression' });
    expect(GLUE_TASKS.qqp).toMatchObject({ textColumn: 'question1', textPairColumn: 'question2' });
    expect(GLUE_TASKS.qnli).toMatchObject({ textColumn: 'question', textPairColumn: 'sentence' });
    expect(GLUE_TASKS.sst2.textPairColumn).toBeUndefined();
  });

  it('custom tasks: one label means regression', () => {
    expect(customTask({ textColumn: 'a', textPairColumn: 'b', labelColumn: 'y', numLabels: 1 })).toEqual({
      name: 'custom', textColumn: 'a', textPairColumn: 'b', labelColumn: 'y', labelKind: 'regression', numLabels: 1,
    });
    expect(customTask({ textColumn: 'a', numLabels: 4 })).toMatchObject({ labelColumn: 'label', labelKind: 'class', numLabels: 4 });
  });
});
