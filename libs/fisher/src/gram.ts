import { existsSync } from 'node:fs';
import { concatMap, type OperatorFunction } from 'rxjs';
import { UserError, type Tensor, type TokenBatch } from '@fisher-merge/core';
import { readSafetensors, SafetensorsWriter, writeSafetensors } from '@fisher-merge/checkpoint';
import { encoderTensorRoles, type EncoderRole, type Engine, type InputGrams, type ModelShape } from '@fisher-merge/model';
import { addFingerprints, batchFingerprint, EMPTY_DATA_FINGERPRINT } from './mask-fisher.ts';
import { checkExampleCounts, checkStatisticValues } from './statistic-check.ts';

/** `fisher_merge` metadata value of a Gram statistics file (RegMean, shared/docs/method.md section 7). */
export const GRAM_FORMAT = 'gram/1';

/** The linear whose input a Gram describes: query stands for key and value too (one shared input). */
export type GramRole = 'query' | 'attnOut' | 'ffnIn' | 'ffnOut' | 'pooler';

/** The Gram input a merged weight of each role reads; roles absent here are averaged. */
export const GRAM_INPUT_ROLE: Readonly<Partial<Record<EncoderRole, GramRole>>> = {
  query: 'query', key: 'query', value: 'query', attnOut: 'attnOut', ffnIn: 'ffnIn', ffnOut: 'ffnOut', pooler: 'pooler',
};

/** An input with a Gram: named after the module reading it (without the encoder prefix); the Gram is [dim, dim]. */
export interface GramInput {
  name: string;
  dim: number;
}

/** A model's Gram input: which linear reads it, in which layer. */
export interface ModelGramInput extends GramInput {
  role: GramRole;
  layer?: number;
}

/** The model's Gram inputs, in layer order: per layer query (shared with key, value), attnOut, ffnIn, ffnOut; then the pooler where the model has one. */
export function gramInputs(model: ModelShape): ModelGramInput[] {
  return encoderTensorRoles(model).flatMap((t) => {
    if (t.param !== 'weight' || GRAM_INPUT_ROLE[t.role] !== t.role) return [];
    const role = t.role as GramRole;
    return [{ name: t.name.slice(model.encoderPrefix.length).replace(/\.weight$/, ''), role, ...(t.layer === undefined ? {} : { layer: t.layer }), dim: t.shape[1]! }];
  });
}

/** The Gram input read by the weight of a tensor of this role and layer; undefined where RegMean averages. */
export function gramInputOf(inputs: readonly ModelGramInput[], tensor: { role: EncoderRole; layer?: number; param: 'weight' | 'bias' }): ModelGramInput | undefined {
  const role = tensor.param === 'weight' ? GRAM_INPUT_ROLE[tensor.role] : undefined;
  return role && inputs.find((i) => i.role === role && i.layer === tensor.layer);
}

/** Sum over positions of x x^T, row-major [dim, dim], and the number of positions. */
export interface Gram {
  sum: Float64Array;
  count: number;
}

/** Running Gram statistics of one model on one task: sums and counts add over disjoint data exactly. */
export interface GramStats {
  inputs: GramInput[];
  /** By input name, in `inputs` order. */
  grams: Map<string, Gram>;
  examples: number;
  task: string;
  modelFingerprint: string;
  dataFingerprint: string;
}

export function emptyGramStats(inputs: GramInput[], info: { task: string; modelFingerprint: string }): GramStats {
  return {
    inputs,
    grams: new Map(inputs.map((i) => [i.name, { sum: new Float64Array(i.dim * i.dim), count: 0 }])),
    examples: 0,
    dataFingerprint: EMPTY_DATA_FINGERPRINT,
    task: info.task,
    modelFingerprint: info.modelFingerprint,
  };
}

/** The engine's sums of one batch for one input: each layer's over real tokens, the pooler's over examples. */
function batchGram(input: ModelGramInput, g: InputGrams): Gram {
  if (input.role === 'pooler') return { sum: g.head, count: g.rows };
  const layer = g.layers[input.layer!]!;
  return { sum: input.role === 'query' ? layer.attention : layer[input.role], count: g.tokens };
}

/** Adds each input's Gram into `into` (of the same inputs) in place, sums and counts. */
function addInto<I extends GramInput>(into: GramStats, inputs: readonly I[], grams: (input: I) => Gram): void {
  for (const input of inputs) {
    const acc = into.grams.get(input.name)!;
    const g = grams(input);
    if (g.sum.length !== acc.sum.length) throw new Error(`Gram of '${input.name}' has ${g.sum.length} values, expected ${acc.sum.length}`);
    for (let k = 0; k < acc.sum.length; k++) acc.sum[k]! += g.sum[k]!;
    acc.count += g.count;
  }
}

/** One batch's share of Gram statistics: what `addGramContribution` adds to the running sums. */
export interface GramContribution {
  /** By input name. */
  grams: Map<string, Gram>;
  examples: number;
  dataFingerprint: string;
}

/** A batch's contribution from the engine's input Grams of it. */
export function gramContribution(inputs: readonly ModelGramInput[], g: InputGrams, batch: TokenBatch): GramContribution {
  return { grams: new Map(inputs.map((input) => [input.name, batchGram(input, g)])), examples: batch.batchSize, dataFingerprint: batchFingerprint(batch) };
}

/**
 * The statistics after one more batch. The sums and counts are added in place (about a gigabyte for
 * BERT-base is not copied per batch): the result is a new object sharing them with `stats`, whose
 * own examples and fingerprint stay as they were. Whoever keeps sums past the next batch copies them.
 */
export function addGramContribution(stats: GramStats, c: GramContribution): GramStats {
  addInto(stats, stats.inputs, (input) => c.grams.get(input.name)!);
  return { ...stats, examples: stats.examples + c.examples, dataFingerprint: addFingerprints(stats.dataFingerprint, c.dataFingerprint) };
}

/** Runs each batch forward through the engine into its Gram contribution (in process or on a worker). */
export async function computeGramContribution(engine: Engine, inputs: readonly ModelGramInput[], batch: TokenBatch): Promise<GramContribution> {
  if (!engine.inputGrams) throw new Error(`engine ${engine.name} computes no input Grams`);
  return gramContribution(inputs, await engine.inputGrams(batch), batch);
}

/**
 * Runs each batch forward through the engine and adds its input Grams to running sums, emitted after
 * every batch. The sums (about a gigabyte for BERT-base) are added in place, per subscription: every
 * emission shares them, updated; a consumer that keeps one copies it.
 */
export function accumulateGrams<T extends { tokens: TokenBatch }>(engine: Engine, inputs: ModelGramInput[], info: { task: string; modelFingerprint: string }): OperatorFunction<T, { stats: GramStats; batch: T }> {
  if (!engine.inputGrams) throw new Error(`engine ${engine.name} computes no input Grams`);
  return (source) => {
    let stats = emptyGramStats(inputs, info);
    return source.pipe(
      concatMap(async (batch) => {
        stats = addGramContribution(stats, await computeGramContribution(engine, inputs, batch.tokens));
        return { stats, batch };
      }),
    );
  };
}

/** The statistics of the union of two disjoint accumulations of the same model and task (new arrays). */
export function addGramStats(a: GramStats, b: GramStats): GramStats {
  for (const key of ['modelFingerprint', 'task'] as const) {
    if (a[key] !== b[key]) throw new Error(`cannot add Gram statistics with different ${key}: ${a[key]} vs ${b[key]}`);
  }
  const shape = (s: GramStats) => s.inputs.map((i) => `${i.name}:${i.dim}`).join(',');
  if (shape(a) !== shape(b)) throw new Error('cannot add Gram statistics of different inputs');
  const sum = emptyGramStats(a.inputs, a);
  addInto(sum, a.inputs, (input) => a.grams.get(input.name)!);
  addInto(sum, a.inputs, (input) => b.grams.get(input.name)!);
  return { ...sum, examples: a.examples + b.examples, dataFingerprint: addFingerprints(a.dataFingerprint, b.dataFingerprint) };
}

const SUM = '.gram_sum';
const COUNT = '.gram_count';

/** The tensors and metadata of a Gram file: `<input>.gram_sum` [dim, dim] and `<input>.gram_count` [1] (F64) per input, with the metadata of a Fisher file. */
function gramFileContent(file: string, stats: GramStats): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const tensors: Record<string, Tensor> = {};
  for (const input of stats.inputs) {
    const g = stats.grams.get(input.name)!;
    checkStatisticValues({ file, tensor: `${input.name}${SUM}`, shape: [input.dim, input.dim] }, g.sum, { sumOfSquares: false });
    tensors[`${input.name}${SUM}`] = { dtype: 'F64', shape: [input.dim, input.dim], data: g.sum };
    tensors[`${input.name}${COUNT}`] = { dtype: 'F64', shape: [1], data: Float64Array.of(g.count) };
  }
  return {
    tensors,
    metadata: {
      format: 'pt',
      fisher_merge: GRAM_FORMAT,
      examples: String(stats.examples),
      task: stats.task,
      model_fingerprint: stats.modelFingerprint,
      data_fingerprint: stats.dataFingerprint,
    },
  };
}

/** Writes a Gram statistics file atomically. */
export async function writeGramStats(file: string, stats: GramStats): Promise<void> {
  const { tensors, metadata } = gramFileContent(file, stats);
  await writeSafetensors(file, tensors, metadata);
}

/**
 * Writes the same file, every byte before it returns (the flush to disk and the rename are what the
 * promise waits for): a job whose sums change in place between its awaits snapshots them this way,
 * without a gigabyte's copy in memory.
 */
export function writeGramStatsNow(file: string, stats: GramStats): Promise<void> {
  const { tensors, metadata } = gramFileContent(file, stats);
  const writer = SafetensorsWriter.create(file, tensors, metadata);
  try {
    for (const name of writer.names) writer.write(name, tensors[name]!);
  } catch (e) {
    writer.abort();
    throw e;
  }
  return writer.closeAsync();
}

/** A Gram file opened and checked against a model's inputs; each sum is read (and checked) on demand. */
export interface GramFile {
  meta: { examples: number; task: string; modelFingerprint: string; dataFingerprint: string };
  counts: Map<string, number>;
  sum(name: string): Float64Array;
}

/**
 * Opens a Gram file for a model with these inputs: every input present with a [dim, dim] sum and a
 * positive finite count (checked now); a sum is checked when read: finite, a non-negative diagonal, and
 * no entry larger than the diagonal allows (what a sum of x x^T must satisfy).
 */
export function openGramFile(file: string, inputs: readonly GramInput[]): GramFile {
  if (!existsSync(file)) throw new UserError(`Gram file not found: ${file}`);
  const st = readSafetensors(file);
  const kind = st.metadata.fisher_merge;
  if (kind !== GRAM_FORMAT) throw new UserError(`${file}: not a Gram statistics file (metadata fisher_merge is ${JSON.stringify(kind)}, expected "${GRAM_FORMAT}"; compute one with fisher --kind gram)`);
  const examples = Number(st.metadata.examples ?? Number.NaN);
  checkExampleCounts(file, { examples });
  const counts = new Map<string, number>();
  for (const { name, dim } of inputs) {
    for (const [suffix, shape] of [[SUM, [dim, dim]], [COUNT, [1]]] as const) {
      if (!st.has(`${name}${suffix}`)) throw new UserError(`${file}: missing tensor '${name}${suffix}' (a Gram file of another architecture?)`);
      const info = st.info(`${name}${suffix}`);
      if (info.shape.join(',') !== shape.join(',')) throw new UserError(`${file}: tensor '${name}${suffix}' has shape [${info.shape.join(',')}], expected [${shape.join(',')}]`);
    }
    const count = st.float64(`${name}${COUNT}`)[0]!;
    if (!(Number.isInteger(count) && count > 0)) throw new UserError(`${file}: tensor '${name}${COUNT}' must be a positive whole number of positions, got ${count}`);
    counts.set(name, count);
  }
  return {
    meta: { examples, task: st.metadata.task ?? '', modelFingerprint: st.metadata.model_fingerprint ?? '', dataFingerprint: st.metadata.data_fingerprint ?? '' },
    counts,
    sum(name) {
      const sum = st.float64(`${name}${SUM}`);
      const dim = Math.round(Math.sqrt(sum.length));
      checkStatisticValues({ file, tensor: `${name}${SUM}`, shape: [dim, dim] }, sum, { sumOfSquares: false });
      for (let i = 0; i < dim; i++) {
        if (sum[i * dim + i]! < 0) throw new UserError(`${file}: tensor '${name}${SUM}' has a negative diagonal entry ${sum[i * dim + i]} at [${i},${i}]; a Gram sum of x x^T has none`);
      }
      // A sum of x x^T is positive semi-definite, so |S_ij| <= sqrt(S_ii S_jj) (Cauchy-Schwarz; a cheap necessary check).
      for (let i = 0; i < dim; i++) {
        for (let j = 0; j < i; j++) {
          const bound = Math.sqrt(sum[i * dim + i]! * sum[j * dim + j]!) * (1 + 1e-9);
          if (Math.abs(sum[i * dim + j]!) > bound) throw new UserError(`${file}: tensor '${name}${SUM}' is not a Gram sum: |S[${i},${j}]| = ${Math.abs(sum[i * dim + j]!)} exceeds sqrt(S[${i},${i}] S[${j},${j}]) = ${bound}`);
        }
      }
      return sum;
    },
  };
}

/** Reads a whole Gram file, checked as `openGramFile` checks it; its inputs are the file's own (`fisher-add` has no model). */
export function readGramStats(file: string): GramStats {
  const inputs = gramInputsOfFile(file);
  const opened = openGramFile(file, inputs);
  return {
    inputs,
    grams: new Map(inputs.map((i) => [i.name, { sum: opened.sum(i.name), count: opened.counts.get(i.name)! }])),
    ...opened.meta,
  };
}

/** Whether a file's metadata says it holds Gram statistics (a missing or unreadable file is left to a reader to report). */
export function isGramFile(file: string): boolean {
  try {
    return readSafetensors(file).metadata.fisher_merge === GRAM_FORMAT;
  } catch {
    return false;
  }
}

/** The Gram inputs a file holds, by its tensor names and shapes. */
function gramInputsOfFile(file: string): GramInput[] {
  if (!existsSync(file)) throw new UserError(`Gram file not found: ${file}`);
  const st = readSafetensors(file);
  return st.names().filter((n) => n.endsWith(SUM)).map((n) => ({ name: n.slice(0, -SUM.length), dim: st.info(n).shape[0] ?? 0 }));
}
