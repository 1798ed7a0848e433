import { map, type OperatorFunction } from 'rxjs';
import { DataType, Field, Float32, Float64, Int32, List, makeData, RecordBatch, Schema, Struct, type Data, type Vector } from 'apache-arrow';
import { UserError } from '@fisher-merge/core';
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

function tokenizeBatch(tokenizer: TextTokenizer, task: TaskSpec, item: SourceBatch, maxLength: number, labels: boolean, schema: Schema): RecordBatch {
  const { batch, selection, source } = item;
  const text = textColumn(batch, source, task.textColumn);
  const pair = task.textPairColumn === undefined ? undefined : textColumn(batch, source, task.textPairColumn);
  const label = labels ? labelColumn(batch, source, task) : undefined;

  const numRows = selection ? selection.length : batch.numRows;
  const offsets = new Int32Array(numRows + 1);
  let ids: Int32Array = new Int32Array(numRows * 32);
  let typeIds: Int32Array = new Int32Array(ids.length);
  const labelValues = new Float32Array(label ? numRows : 0);
  const rowIds = new Float64Array(numRows);
  let used = 0;
  const maxTokens = tokenizer.maxTokens;
  for (let i = 0; i < numRows; i++) {
    const row = selection ? selection[i]! : i;
    const encoded = tokenizer.encode(readText(text, source, task.textColumn, row), pair && readText(pair, source, task.textPairColumn!, row), maxLength);
    if (encoded.ids.length > maxTokens) {
      throw new UserError(`${source.file}: row ${source.rowOffset + row} (0-based) has ${encoded.ids.length} tokens, more than the ${maxTokens} positions of ${tokenizer.limitsLabel} (max_position_embeddings); use a max length of at most ${maxTokens}`);
    }
    if (used + encoded.ids.length > ids.length) {
      const grown = Math.max(ids.length * 2, used + encoded.ids.length);
      ids = grow(ids, grown);
      typeIds = grow(typeIds, grown);
    }
    ids.set(encoded.ids, used);
    typeIds.set(encoded.typeIds, used);
    used += encoded.ids.length;
    offsets[i + 1] = used;
    if (label) labelValues[i] = readLabel(label, source, task, row);
    rowIds[i] = source.rowId + row;
  }
  const list = (values: Int32Array): Data<List<Int32>> =>
    makeData({ type: int32List(), length: numRows, nullCount: 0, valueOffsets: offsets, child: makeData({ type: new Int32(), length: used, nullCount: 0, data: values }) });
  const children: Data[] = [
    list(ids.subarray(0, used)),
    list(typeIds.subarray(0, used)),
    list(new Int32Array(used).fill(1)),
    ...(label ? [makeData({ type: new Float32(), length: numRows, nullCount: 0, data: labelValues })] : []),
    makeData({ type: new Float64(), length: numRows, nullCount: 0, data: rowIds }),
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
  if (typeof raw === 'string' && !Object.hasOwn(ids, raw)) throw new UserError(`${where} is ${JSON.stringify(raw)}, not a label of the model (label2id: ${Object.keys(ids).join(', ')})`);
  const value = typeof raw === 'string' ? ids[raw]! : Number(raw);
  if (task.labelKind === 'class' && !(value >= 0 && value < task.numLabels)) {
    throw new UserError(`${where} is ${raw}, expected a class index in [0, ${task.numLabels - 1}]`);
  }
  if (!Number.isFinite(value)) throw new UserError(`${where} is ${raw}, expected a finite number`);
  return value;
}
