import type { TokenBatch } from '@fisher-merge/core';
import type { FisherContribution } from '@fisher-merge/fisher';
import type { EncoderConfig } from '@fisher-merge/model';
import { EntryError, field, type StreamEntry } from './redis.ts';

const bytes = (a: Int32Array | Float32Array | Float64Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
/** A copy: the reply buffer may be pooled, and typed arrays need aligned offsets. */
function view<T>(entry: StreamEntry, name: string, Type: { new (b: ArrayBuffer): T; BYTES_PER_ELEMENT: number }): T {
  const buffer = field(entry, name);
  if (buffer.byteLength % Type.BYTES_PER_ELEMENT !== 0) throw new EntryError(`field '${name}' has ${buffer.byteLength} bytes, not a whole number of ${Type.BYTES_PER_ELEMENT}-byte values`);
  return new Type(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer);
}

function count(entry: StreamEntry, name: string, min: number): number {
  const text = field(entry, name).toString();
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min) throw new EntryError(`field '${name}' is ${JSON.stringify(text.slice(0, 40))}, expected an integer >= ${min}`);
  return n;
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

/** The run an entry names, without decoding the rest (undefined when it names none). */
export function entryRun(entry: StreamEntry): string | undefined {
  return entry.fields.get('run')?.toString();
}

/** What a worker checks a batch against: the model's tables and label space. */
export type BatchLimits = Pick<EncoderConfig, 'vocabSize' | 'typeVocabSize' | 'maxPositions' | 'numLabels' | 'problemType'>;

/**
 * A batch entry decoded and checked against the model, or throws EntryError saying why not: a
 * missing field, lengths that disagree with batch_size x seq_len, or ids, types, mask values or
 * labels outside what the model takes (an engine given those would read out of its tables).
 */
export function readBatch(entry: StreamEntry, limits: BatchLimits): QueuedBatch {
  const run = field(entry, 'run').toString();
  const seq = count(entry, 'seq', 0);
  const batchSize = count(entry, 'batch_size', 1);
  const seqLen = count(entry, 'seq_len', 1);
  const tokens: TokenBatch = {
    batchSize,
    seqLen,
    inputIds: view(entry, 'input_ids', Int32Array),
    attentionMask: view(entry, 'attention_mask', Int32Array),
    tokenTypeIds: view(entry, 'token_type_ids', Int32Array),
    labels: view(entry, 'labels', Float32Array),
  };
  if (seqLen > limits.maxPositions) throw new EntryError(`seq_len ${seqLen} exceeds the model's ${limits.maxPositions} positions`);
  const within = (name: string, values: Int32Array, below: number, what: string): void => {
    if (values.length !== batchSize * seqLen) throw new EntryError(`field '${name}' holds ${values.length} values, expected batch_size x seq_len = ${batchSize} x ${seqLen} = ${batchSize * seqLen}`);
    const bad = values.findIndex((v) => v < 0 || v >= below);
    if (bad >= 0) throw new EntryError(`${name}[${bad}] = ${values[bad]} is outside ${what}`);
  };
  within('input_ids', tokens.inputIds, limits.vocabSize, `the vocabulary (vocab_size ${limits.vocabSize})`);
  within('token_type_ids', tokens.tokenTypeIds, Math.max(limits.typeVocabSize, 1), `the token types (type_vocab_size ${limits.typeVocabSize})`);
  within('attention_mask', tokens.attentionMask, 2, '0 and 1');
  const labels = tokens.labels!;
  if (labels.length !== batchSize) throw new EntryError(`field 'labels' holds ${labels.length} values, expected batch_size = ${batchSize}`);
  const regression = limits.problemType === 'regression';
  const badLabel = labels.findIndex((y) => (regression ? !Number.isFinite(y) : !(Number.isInteger(y) && y >= 0 && y < limits.numLabels)));
  if (badLabel >= 0) throw new EntryError(`labels[${badLabel}] = ${labels[badLabel]} is not ${regression ? 'a finite number' : `a class index in [0, ${limits.numLabels - 1}]`}`);
  return { run, seq, tokens };
}

/** Fields of a result: its batch's run, seq and entry id, the worker, and the contribution. */
export function resultFields(batch: QueuedBatch, entry: string, worker: string, c: FisherContribution): (string | Buffer)[] {
  return ['run', batch.run, 'seq', String(batch.seq), 'entry', entry, 'worker', worker, 'examples', String(c.examples), 'fingerprint', c.dataFingerprint, 'head', bytes(c.head), 'neuron', bytes(c.neuron)];
}

export interface QueuedResult {
  run: string;
  seq: number;
  worker: string;
  contribution: FisherContribution;
}

/** A result entry decoded, or throws EntryError saying what is missing or malformed. */
export function readResult(entry: StreamEntry): QueuedResult {
  return {
    run: field(entry, 'run').toString(),
    seq: count(entry, 'seq', 0),
    worker: field(entry, 'worker').toString(),
    contribution: {
      head: view(entry, 'head', Float64Array),
      neuron: view(entry, 'neuron', Float64Array),
      examples: count(entry, 'examples', 1),
      dataFingerprint: field(entry, 'fingerprint').toString(),
    },
  };
}

/** Fields of a dead letter: the refused entry's id, run and seq (as far as readable), why, and who refused it. */
export function deadLetterFields(entry: StreamEntry, reason: string, worker: string): string[] {
  const named = (name: string): string[] => {
    const value = entry.fields.get(name);
    return value === undefined ? [] : [name, value.toString().slice(0, 200)];
  };
  return ['entry', entry.id, ...named('run'), ...named('seq'), 'reason', reason, 'worker', worker];
}

export interface DeadLetter {
  entry: string;
  run?: string;
  reason: string;
  worker: string;
}

export function readDeadLetter(entry: StreamEntry): DeadLetter {
  const text = (name: string): string | undefined => entry.fields.get(name)?.toString();
  return { entry: text('entry') ?? '', ...(text('run') !== undefined ? { run: text('run')! } : {}), reason: text('reason') ?? '', worker: text('worker') ?? '' };
}
