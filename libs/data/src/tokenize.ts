import { map, type OperatorFunction } from 'rxjs';
import { DataType, Field, Float32, Float64, Int32, List, makeData, RecordBatch, Schema, Struct, type Data, type Vector } from 'apache-arrow';
import { shown, UserError } from '@fisher-merge/core';
import type { SourceBatch, SourcePosition } from './source-batch.ts';
import type { TaskSpec } from './tasks.ts';
import { DEFAULT_MAX_LENGTH } from './tasks.ts';
import type { TextTokenizer } from './tokenizer.ts';

export interface TokenizeOptions {
  maxLength?: number;
  /** Read and validate the task's label column (default true); false for unlabeled data. */
  labels?: boolean;
}

/** Column names of a tokenized batch. */
export const TOKENIZED = {
  inputIds: 'input_ids',
  tokenTypeIds: 'token_type_ids',
  attentionMask: 'attention_mask',
  label: 'label',
  rowId: 'row_id',
} as const;

const int32List = (): List<Int32> => new List(new Field('item', new Int32(), false));

/** Schema of tokenized batches: unpadded ids as list<int32>, labels Float32, row ids Float64. */
export function tokenizedSchema(labels: boolean): Schema {
  return new Schema([
    new Field(TOKENIZED.inputIds, int32List(), false),
    new Field(TOKENIZED.tokenTypeIds, int32List(), false),
    new Field(TOKENIZED.attentionMask, int32List(), false),
    ...(labels ? [new Field(TOKENIZED.label, new Float32(), false)] : []),
    new Field(TOKENIZED.rowId, new Float64(), false),
  ]);
}

/**
 * Tokenizes the task's text column(s) of each batch (selected rows only) into a tokenized batch.
 * list<int32> is Arrow's flat Int32Array + offsets, so each column is built with a single copy
 * and the three lists share one offsets buffer; padding later copies rows straight out of it.
 * Labels become Float32 (class index or regression target); `row_id` is the global row id.
 */
export function tokenize(tokenizer: TextTokenizer, task: TaskSpec, options: TokenizeOptions = {}): OperatorFunction<SourceBatch, SourceBatch> {
  const maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  if (!Number.isInteger(maxLength) || maxLength < 1) throw new UserError(`max length must be an integer >= 1, got ${maxLength}`);
  const labels = options.labels ?? true;
  const schema = tokenizedSchema(labels);
  return map((item) => ({ source: item.source, batch: tokenizeBatch(tokenizer, task, item, maxLength, labels, schema) }));
}

/** A batch's texts, labels and global row ids, read and checked in row order (selected rows only). */
export interface BatchTexts {
  texts: string[];
  pairs: string[] | undefined;
  labels: Float32Array | undefined;
  rowIds: Float64Array;
}

export function batchTexts(task: TaskSpec, item: SourceBatch, labels: boolean): BatchTexts {
  const { batch, selection, source } = item;
  const text = textColumn(batch, source, task.textColumn);
  const pair = task.textPairColumn === undefined ? undefined : textColumn(batch, source, task.textPairColumn);
  const label = labels ? labelColumn(batch, source, task) : undefined;
  const numRows = selection ? selection.length : batch.numRows;
  const rows = Array.from({ length: numRows }, (_, i) => (selection ? selection[i]! : i));
  return {
    texts: rows.map((row) => readText(text, source, task.textColumn, row)),
    pairs: pair && rows.map((row) => readText(pair, source, task.textPairColumn!, row)),
    labels: label && Float32Array.from(rows, (row) => readLabel(label, source, task, row)),
    rowIds: Float64Array.from(rows, (row) => source.rowId + row),
  };
}

/** Token ids of many rows as Arrow's list layout: flat ids and token types, and row i at [offsets[i], offsets[i+1]). */
export interface EncodedRows {
  ids: Int32Array;
  typeIds: Int32Array;
  offsets: Int32Array;
}

/** Encodes rows into one flat buffer; `tooLong` names a row that exceeds the tokenizer's model limit. */
export function encodeRows(tokenizer: TextTokenizer, texts: readonly string[], pairs: readonly string[] | undefined, maxLength: number, tooLong?: (row: number, tokens: number) => Error): EncodedRows {
  const offsets = new Int32Array(texts.length + 1);
  let ids: Int32Array = new Int32Array(texts.length * 32);
  let typeIds: Int32Array = new Int32Array(ids.length);
  let used = 0;
  const maxTokens = tokenizer.maxTokens;
  for (let i = 0; i < texts.length; i++) {
    const encoded = tokenizer.encode(texts[i]!, pairs?.[i], maxLength);
    if (encoded.ids.length > maxTokens) throw tooLong?.(i, encoded.ids.length) ?? new UserError(`row ${i} has ${encoded.ids.length} tokens, more than ${maxTokens}`);
    if (used + encoded.ids.length > ids.length) {
      const grown = Math.max(ids.length * 2, used + encoded.ids.length);
      ids = grow(ids, grown);
      typeIds = grow(typeIds, grown);
    }
    ids.set(encoded.ids, used);
    typeIds.set(encoded.typeIds, used);
    used += encoded.ids.length;
    offsets[i + 1] = used;
  }
  return { ids: ids.slice(0, used), typeIds: typeIds.slice(0, used), offsets };
}

/** An Arrow list<int32> column over flat values and offsets. */
export function int32ListData(values: Int32Array, offsets: Int32Array): Data<List<Int32>> {
  return makeData({ type: int32List(), length: offsets.length - 1, nullCount: 0, valueOffsets: offsets, child: makeData({ type: new Int32(), length: values.length, nullCount: 0, data: values }) });
}

function tokenizeBatch(tokenizer: TextTokenizer, task: TaskSpec, item: SourceBatch, maxLength: number, labels: boolean, schema: Schema): RecordBatch {
  const { source, selection } = item;
  const rows = batchTexts(task, item, labels);
  const tooLong = (i: number, tokens: number) => {
    const row = selection ? selection[i]! : i;
    return new UserError(`${source.file}: row ${source.rowOffset + row} (0-based) has ${tokens} tokens, more than the ${tokenizer.maxTokens} positions of ${tokenizer.limitsLabel} (max_position_embeddings); use a max length of at most ${tokenizer.maxTokens}`);
  };
  const { ids, typeIds, offsets } = encodeRows(tokenizer, rows.texts, rows.pairs, maxLength, tooLong);
  const numRows = rows.texts.length;
  const children: Data[] = [
    int32ListData(ids, offsets),
    int32ListData(typeIds, offsets),
    int32ListData(new Int32Array(ids.length).fill(1), offsets),
    ...(rows.labels ? [makeData({ type: new Float32(), length: numRows, nullCount: 0, data: rows.labels })] : []),
    makeData({ type: new Float64(), length: numRows, nullCount: 0, data: rows.rowIds }),
  ];
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: numRows, nullCount: 0, children }));
}

function grow(values: Int32Array, length: number): Int32Array {
  const grown = new Int32Array(length);
  grown.set(values);
  return grown;
}

function column(batch: RecordBatch, source: SourcePosition, name: string, expected: string): Vector {
  const vector = batch.getChild(name);
  if (!vector) throw new UserError(`${source.file}: column '${name}' not found, expected ${expected} (columns: ${batch.schema.fields.map((f) => f.name).join(', ')})`);
  return vector;
}

/** utf8, large utf8, or a dictionary of either. */
function isStringType(t: DataType): boolean {
  return DataType.isUtf8(t) || DataType.isLargeUtf8(t) || (DataType.isDictionary(t) && isStringType(t.dictionary));
}

function textColumn(batch: RecordBatch, source: SourcePosition, name: string): Vector {
  const vector = column(batch, source, name, 'a string column');
  const type = vector.type as DataType;
  if (!isStringType(type)) {
    throw new UserError(`${source.file}: column '${name}' has type ${type}, expected a string column (utf8)`);
  }
  return vector;
}

function labelColumn(batch: RecordBatch, source: SourcePosition, task: TaskSpec): Vector {
  const strings = task.labelKind === 'class' && task.labelIds !== undefined;
  const expected = task.labelKind === 'regression' ? 'a numeric column (regression target)' : `an integer column (class index)${strings ? ' or strings named in label2id' : ''}`;
  const vector = column(batch, source, task.labelColumn, expected);
  const type = vector.type as DataType;
  const ok = task.labelKind === 'class' ? DataType.isInt(type) || (strings && isStringType(type)) : DataType.isInt(type) || DataType.isFloat(type);
  if (!ok) throw new UserError(`${source.file}: column '${task.labelColumn}' has type ${type}, expected ${expected}`);
  return vector;
}

function readText(vector: Vector, source: SourcePosition, name: string, row: number): string {
  const value = vector.get(row) as string | null;
  if (value === null) throw new UserError(`${source.file}: null in text column '${name}' at row ${source.rowOffset + row} (0-based)`);
  return value;
}

function readLabel(vector: Vector, source: SourcePosition, task: TaskSpec, row: number): number {
  const raw = vector.get(row) as number | bigint | string | null;
  const where = `${source.file}: label column '${task.labelColumn}' at row ${source.rowOffset + row} (0-based)`;
  if (raw === null) throw new UserError(`${where} is null`);
  // String columns are accepted only with labelIds (labelColumn checks).
  const ids = task.labelIds!;
  if (typeof raw === 'string' && !Object.hasOwn(ids, raw)) throw new UserError(`${where} is ${shown(raw)}, not a label of the model (label2id: ${Object.keys(ids).join(', ')})`);
  const value = typeof raw === 'string' ? ids[raw]! : Number(raw);
  if (task.labelKind === 'class' && !(value >= 0 && value < task.numLabels)) {
    throw new UserError(`${where} is ${raw}, expected a class index in [0, ${task.numLabels - 1}]`);
  }
  if (!Number.isFinite(value)) throw new UserError(`${where} is ${raw}, expected a finite number`);
  return value;
}
