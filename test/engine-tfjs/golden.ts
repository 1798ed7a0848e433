// Fixture models, their PyTorch goldens, and the training batches the goldens were computed on.
import path from 'node:path';
import { firstValueFrom, toArray } from 'rxjs';
import type { TokenBatch } from '@fisher-merge/core';
import { readSafetensors, type SafetensorsFile } from '@fisher-merge/checkpoint';
import { glueTask, loadTokenizer, padBatches, parquetSource, tokenize } from '@fisher-merge/data';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const TASKS = ['sst2', 'cola', 'rte', 'stsb'] as const;
export type Task = (typeof TASKS)[number];

export const modelDir = (task: string) => path.join(ROOT, 'data/models', task);
export const golden = (task: string, file: string): SafetensorsFile => readSafetensors(path.join(ROOT, 'test/fixtures/golden', task, `${file}.safetensors`));

/** The first 16 validation examples exactly as the golden run fed them, with their labels. */
export function val16Batch(task: string): TokenBatch {
  const f = golden(task, 'val16_inputs_logits');
  const [B, T] = f.info('input_ids').shape as [number, number];
  const ints = (name: string) => Int32Array.from(f.float64(name));
  return { batchSize: B, seqLen: T, inputIds: ints('input_ids'), tokenTypeIds: ints('token_type_ids'), attentionMask: ints('attention_mask'), labels: Float32Array.from(f.float64('labels')) };
}

/** The first n training rows in file order, tokenized (max length 128) and padded per batch. */
export async function trainBatches(task: string, n: number, batchSize: number): Promise<TokenBatch[]> {
  const tokenizer = await loadTokenizer(modelDir(task));
  const file = path.join(ROOT, 'data/glue', task, 'train-00000-of-00001.parquet');
  const batches = await firstValueFrom(
    parquetSource(file, { sample: { kind: 'first', n } }).pipe(
      tokenize(tokenizer, glueTask(task)),
      padBatches({ batchSize, padTokenId: tokenizer.padTokenId }),
      toArray(),
    ),
  );
  return batches.map((b) => b.tokens);
}
