import path from 'node:path';
import { lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { glueTask, loadTokenizer, padBatches, parquetSource, taskColumns, tokenize } from '@fisher-merge/data';
import { glueFile, modelDir, REPO } from './helpers.ts';

describe('tokenized GLUE validation examples match the PyTorch reference', () => {
  for (const name of ['sst2', 'cola', 'rte', 'stsb']) {
    it(name, async () => {
      const golden = readSafetensors(path.join(REPO, 'test/fixtures/golden', name, 'val16_inputs_logits.safetensors'));
      const task = glueTask(name);
      const tokenizer = await loadTokenizer(modelDir(name));
      const batches = await lastValueFrom(
        parquetSource(glueFile(name, 'validation'), { columns: taskColumns(task), sample: { kind: 'first', n: 16 }, batchSize: 5 }).pipe(
          tokenize(tokenizer, task, { maxLength: 128 }),
          padBatches({ batchSize: 16, padTokenId: tokenizer.padTokenId }),
          toArray(),
        ),
      );
      expect(batches).toHaveLength(1);
      const { tokens } = batches[0]!;
      const [rows, seqLen] = golden.info('input_ids').shape;
      expect([tokens.batchSize, tokens.seqLen]).toEqual([rows, seqLen]);
      const asNumbers = (tensor: string): number[] => Array.from(golden.tensor(tensor).data as BigInt64Array, Number);
      expect(Array.from(tokens.inputIds)).toEqual(asNumbers('input_ids'));
      expect(Array.from(tokens.tokenTypeIds)).toEqual(asNumbers('token_type_ids'));
      expect(Array.from(tokens.attentionMask)).toEqual(asNumbers('attention_mask'));
      expect(Array.from(tokens.labels!)).toEqual(Array.from(golden.float64('labels'), Math.fround));
      expect(Array.from(tokens.rowIds!)).toEqual([...Array(16).keys()]);
    });
  }
});
