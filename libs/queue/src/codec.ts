import type { TokenBatch } from '@fisher-merge/core';
import type { FisherContribution } from '@fisher-merge/fisher';
import { field, type StreamEntry } from './redis.ts';

const bytes = (a: Int32Array | Float32Array | Float64Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
/** A copy: the reply buffer may be pooled, and typed arrays need aligned offsets. */
function view<T>(buffer: Buffer, Type: { new (b: ArrayBuffer): T; BYTES_PER_ELEMENT: number }): T {
  if (buffer.byteLength % Type.BYTES_PER_ELEMENT !== 0) throw new Error(`a field of ${buffer.byteLength} bytes is not a whole number of ${Type.BYTES_PER_ELEMENT}-byte values`);
  return new Type(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer);
}

/** Fields of a batch entry: the run that appended it, its sequence number and the padded batch (binary, exact). */
export function batchFields(run: string, seq: number, t: TokenBatch): (string | Buffer)[] {
  if (!t.labels) throw new Error('queued batches must be labelled');
  return ['run', run, 'seq', String(seq), 'batch_size', String(t.batchSize), 'seq_len', String(t.seqLen), 'input_ids', bytes(t.inputIds), 'attention_mask', bytes(t.attentionMask), 'token_type_ids', bytes(t.tokenTypeIds), 'labels', bytes(t.labels)];
}

export interface QueuedBatch {
  run: string;
  seq: number;
  tokens: TokenBatch;
}

export function readBatch(entry: StreamEntry): QueuedBatch {
  const tokens: TokenBatch = {
    batchSize: Number(field(entry, 'batch_size')),
    seqLen: Number(field(entry, 'seq_len')),
    inputIds: view(field(entry, 'input_ids'), Int32Array),
    attentionMask: view(field(entry, 'attention_mask'), Int32Array),
    tokenTypeIds: view(field(entry, 'token_type_ids'), Int32Array),
    labels: view(field(entry, 'labels'), Float32Array),
  };
  if (tokens.inputIds.length !== tokens.batchSize * tokens.seqLen) throw new Error(`batch entry ${entry.id}: ${tokens.inputIds.length} ids for ${tokens.batchSize} x ${tokens.seqLen}`);
  return { run: field(entry, 'run').toString(), seq: Number(field(entry, 'seq')), tokens };
}

export function resultFields(batch: QueuedBatch, worker: string, c: FisherContribution): (string | Buffer)[] {
  return ['run', batch.run, 'seq', String(batch.seq), 'worker', worker, 'examples', String(c.examples), 'fingerprint', c.dataFingerprint, 'head', bytes(c.head), 'neuron', bytes(c.neuron)];
}

export interface QueuedResult {
  run: string;
  seq: number;
  worker: string;
  contribution: FisherContribution;
}

export function readResult(entry: StreamEntry): QueuedResult {
  return {
    run: field(entry, 'run').toString(),
    seq: Number(field(entry, 'seq')),
    worker: field(entry, 'worker').toString(),
    contribution: {
      head: view(field(entry, 'head'), Float64Array),
      neuron: view(field(entry, 'neuron'), Float64Array),
      examples: Number(field(entry, 'examples')),
      dataFingerprint: field(entry, 'fingerprint').toString(),
    },
  };
}
