import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Progress, UserError, refuseExistingOutput, refuseOutputOnInputs, runInThread, threadModule, writeDirAtomic, writeFileAtomic, type TensorData } from '@fisher-merge/core';
import { SafetensorsWriter, TORCH_DTYPE, firstNonfinite, fromFloat32, toFloat32, writeHfFolderFiles, type OutputDType, type TensorInfo } from '@fisher-merge/checkpoint';
import { checkStatisticValues, gramInputOf, gramInputs, openGramFile, readFullFisher, readMaskFisher, type GramStats, type MaskFisher } from '@fisher-merge/fisher';
import { resolveRule, slotMerger, STATISTIC_NAMES, type GramOfSlot, type MergeRule, type Params, type Statistic, type Statistics, type TensorSlot } from '@fisher-merge/merge';
import { describeModel, encoderTensorRoles, headTensorNames, modelFingerprint, type ModelInfo } from '@fisher-merge/model';
import { modelCard, type MergeProvenance, type ModelCardInput } from '@fisher-merge/report';

export interface MergeJobOptions {
  models: readonly string[];
  /** One Fisher file per model, of the one kind of statistic the method declares (`--fisher`). */
  fishers?: readonly string[];
  /** Files per kind of statistic, one per model (a job that computed several kinds); the method's are read. */
  statistics?: { readonly [K in Statistic]?: readonly string[] };
  /** In-memory mask Fisher statistics, one per model, instead of files (a streaming job's running sums). */
  maskFishers?: readonly MaskFisher[];
  /** In-memory Gram statistics (regmean), one per model, instead of files (a streaming job's running sums). */
  grams?: readonly GramStats[];
  method: string;
  params?: Params;
  /** Per-model rule parameters (e.g. density), in --model order. */
  modelParams?: readonly Params[];
  base?: string;
  lambdas?: readonly number[];
  /** The dtype the merged checkpoints are written in; default: the inputs' dtype where they all agree, else F32. */
  dtype?: OutputDType;
  out: string;
  /** Replace an `out` that exists and is not empty (only once the new one is complete); refused otherwise. */
  overwrite?: boolean;
  /** Progress meter label (tensors merged); none when undefined. */
  progressLabel?: string;
  /** Who writes it, for the model cards (default: `fisher-merge merge`). */
  writer?: string;
}

export interface MergeJobResult {
  /** out/encoder and one folder per input model, named after it. */
  outputs: { encoder: string; models: Record<string, string> };
  /** What out/merge.json says, which the model cards describe. */
  provenance: MergeProvenance;
  seconds: number;
}

/** Writes each folder's README.md model card (atomically): the encoder's, then each model's with its scores. */
export async function writeModelCards(result: MergeJobResult, writer: string, evaluation: Record<string, ModelCardInput['evaluation']> = {}): Promise<void> {
  const card = (folder: ModelCardInput['folder'], scores?: ModelCardInput['evaluation']) => modelCard({ provenance: result.provenance, folder, writer, ...(scores ? { evaluation: scores } : {}) });
  await writeFileAtomic(path.join(result.outputs.encoder, 'README.md'), card({ kind: 'encoder' }, Object.values(evaluation).flatMap((e) => e ?? [])));
  for (const [name, dir] of Object.entries(result.outputs.models)) await writeFileAtomic(path.join(dir, 'README.md'), card({ kind: 'task', model: name }, evaluation[name]));
}

/**
 * A model to merge, described but not loaded: its tensors are read one at a time while merging, and
 * each merged tensor is written as soon as it is computed, so a merge holds a few tensors, not a model.
 */
interface MergeMember {
  dir: string;
  model: ModelInfo;
  /** sha256 of its weight files: recorded in the output and checked against its statistics. */
  fingerprint: string;
  /** Encoder tensors in the canonical order shared by every model of the family. */
  slots: TensorSlot[];
}

async function member(dir: string): Promise<MergeMember> {
  const model = await describeModel(dir);
  return { dir, model, fingerprint: await modelFingerprint(model), slots: encoderTensorRoles(model) };
}

/** Models of one family with encoders of one shape, or a UserError saying which differs and how. */
function checkSameArchitecture(reference: MergeMember, other: MergeMember): void {
  const a = reference.model, b = other.model;
  if (a.family.name !== b.family.name) throw new UserError(`cannot merge models of different architectures: ${reference.dir} is ${a.family.name}, ${other.dir} is ${b.family.name}`);
  if (reference.slots.length !== other.slots.length) {
    throw new UserError(`cannot merge encoders of different structure: ${reference.dir} has ${reference.slots.length} encoder tensors, ${other.dir} has ${other.slots.length}`);
  }
  reference.slots.forEach((slot, i) => {
    const o = other.slots[i]!;
    if (slot.shape.join(',') !== o.shape.join(',')) {
      throw new UserError(`cannot merge encoders of different shapes: ${reference.dir} '${slot.name}' is [${slot.shape.join(',')}], ${other.dir} '${o.name}' is [${o.shape.join(',')}]`);
    }
  });
}

function checkFisherMatches(file: string, fisher: MaskFisher | { modelFingerprint: string }, m: MergeMember): void {
  if (fisher.modelFingerprint !== m.fingerprint) {
    throw new UserError(`${file}: Fisher statistics were computed on another model (fingerprint ${fisher.modelFingerprint.slice(0, 12)}…), not ${m.dir} (${m.fingerprint.slice(0, 12)}…)`);
  }
  if ('head' in fisher) {
    const c = m.model.config;
    if (fisher.numLayers !== c.numLayers || fisher.numHeads !== c.numHeads || fisher.intermediateSize !== c.intermediateSize) {
      throw new UserError(`${file}: Fisher shape L${fisher.numLayers} H${fisher.numHeads} I${fisher.intermediateSize} does not match ${m.dir} (L${c.numLayers} H${c.numHeads} I${c.intermediateSize})`);
    }
  }
}

/** What a Fisher file says of the data behind it, for the provenance. */
interface FisherData { examples: number; dataFingerprint: string }

/** How the job supplies each statistic a rule can declare: one model's file, read and checked against that model. */
const READ_STATISTIC: { [K in Statistic]: (file: string, m: MergeMember, reference: MergeMember) => Promise<{ statistic: NonNullable<Statistics[K]>[number]; data: FisherData }> } = {
  async maskFisher(file, m) {
    const fisher = await readMaskFisher(file);
    checkFisherMatches(file, fisher, m);
    return { statistic: fisher, data: fisher };
  },
  async fullFisher(file, m, reference) {
    const fisher = readFullFisher(file);
    checkFisherMatches(file, fisher.meta, m);
    // The rule asks by the first model's tensor names.
    const index = new Map(reference.slots.map((s, i) => [s.name, m.slots[i]!]));
    return {
      statistic: (name) => {
        const slot = index.get(name)!;
        const values = fisher.tensor(slot.name);
        const size = slot.shape.reduce((a, b) => a * b, 1);
        if (values.length !== size) throw new UserError(`${file}: tensor '${slot.name}' holds ${values.length} values, but ${m.dir} has [${slot.shape.join(',')}] (${size})`);
        return values;
      },
      data: fisher.meta,
    };
  },
  async gram(file, m) {
    const grams = openGramFile(file, gramInputs(m.model));
    checkFisherMatches(file, grams.meta, m);
    return { statistic: gramOfSlots(m, (name) => grams.sum(name), (name) => grams.counts.get(name)!), data: grams.meta };
  },
};

/**
 * One model's Gram sums as the rule asks for them: by the first model's slots, this model's input of
 * the same role and layer. Query, key and value ask in turn for one input, read once.
 */
function gramOfSlots(m: MergeMember, sum: (input: string) => Float64Array, count: (input: string) => number): GramOfSlot {
  const inputs = gramInputs(m.model);
  let read: { name: string; sum: Float64Array } | undefined;
  return (slot) => {
    const input = gramInputOf(inputs, slot);
    if (!input) return undefined;
    if (read?.name !== input.name) read = { name: input.name, sum: sum(input.name) };
    return { input: input.name, sum: read.sum, count: count(input.name) };
  };
}

/** In-memory Gram sums checked as a file's are: the model's inputs and fingerprint, positive counts, finite sums (when read). */
function inMemoryGrams(stats: GramStats, m: MergeMember): GramOfSlot {
  const label = `statistics of task ${stats.task}`;
  checkFisherMatches(label, stats, m);
  const [have, want] = [stats.inputs, gramInputs(m.model)].map((inputs) => inputs.map((i) => `${i.name}:${i.dim}`).join(','));
  if (have !== want) throw new UserError(`${label}: Gram inputs ${have} do not match ${m.dir} (${want})`);
  for (const [name, g] of stats.grams) if (!(g.count > 0)) throw new UserError(`${label}: Gram count of '${name}' is ${g.count}; it needs at least one position`);
  return gramOfSlots(m, (name) => {
    const { sum } = stats.grams.get(name)!;
    checkStatisticValues({ file: label, tensor: `${name}.gram_sum` }, sum, { sumOfSquares: false });
    return sum;
  }, (name) => stats.grams.get(name)!.count);
}

/** The statistic files per kind: `statistics`, or `fishers` as the one kind the method declares. */
function statisticFiles(rule: MergeRule, opts: MergeJobOptions): MergeJobOptions['statistics'] {
  if (opts.statistics || !opts.fishers?.length) return opts.statistics ?? {};
  if (rule.needs.stats.length !== 1) throw new UserError(`--method ${rule.name} ${rule.needs.stats.length === 0 ? 'uses no Fisher files: drop --fisher' : 'needs several kinds of statistics: give them per kind'}`);
  return { [rule.needs.stats[0]!]: opts.fishers };
}

/** Folder names of the outputs: each model's own folder name, which must be distinct and not 'encoder'. */
function outputNames(dirs: readonly string[]): string[] {
  const names = dirs.map((d) => path.basename(path.resolve(d)));
  names.forEach((name, i) => {
    if (name === 'encoder') throw new UserError(`model folder ${dirs[i]} is named 'encoder', which the merged encoder's folder uses; rename it`);
    const j = names.indexOf(name);
    if (j !== i) throw new UserError(`models ${dirs[j]} and ${dirs[i]} share the folder name '${name}', which names their outputs; rename one`);
  });
  return names;
}

/**
 * A written model's config.json: its input's, with the `model_type` of the family its tensors were
 * recognized as when the input had none (Hugging Face's AutoConfig needs it).
 */
function outputConfig(model: ModelInfo): Record<string, unknown> {
  return { ...(model.hfConfig as Record<string, unknown>), model_type: model.hfConfig.model_type ?? model.family.modelTypes[0] };
}

/** The bare encoder's config: the first model's, without its task head. */
function encoderConfig(model: ModelInfo): Record<string, unknown> {
  const { id2label: _a, label2id: _b, problem_type: _c, finetuning_task: _d, ...rest } = outputConfig(model);
  const arch = (model.hfConfig.architectures as string[] | undefined)?.[0];
  return { ...rest, ...(arch ? { architectures: [arch.replace(/For\w+$/, 'Model')] } : {}) };
}

/**
 * A merged tensor as it will be stored, refused when a value is not finite there: a NaN or Inf from
 * the merge's arithmetic (weights whose products overflow), or a finite float32 too large for F16.
 * No model with non-finite weights is ever written.
 */
function storedTensor(dtype: OutputDType, name: string, values: Float32Array, out: string): TensorData {
  const data = fromFloat32(dtype, values);
  const bad = firstNonfinite(dtype === 'F32' ? values : toFloat32(dtype, data));
  if (bad < 0) return data;
  const v = values[bad]!;
  const cause = Number.isFinite(v) ? `${v} does not fit ${dtype} (it overflows to ${toFloat32(dtype, fromFloat32(dtype, Float32Array.of(v)))[0]})` : `the merge computed ${v}: a product or sum of the inputs overflowed (check the merge weights and parameters)`;
  throw new UserError(`merge: tensor '${name}' element ${bad} is not finite: ${cause}; nothing was written to ${out}`);
}

/** The one float dtype every input tensor is stored in, or F32 when they differ (or are F64). */
function inputsDType(members: readonly MergeMember[]): OutputDType {
  const dtypes = new Set(members.flatMap((m) => [...m.slots.map((s) => s.name), ...headTensorNames(m.model)].map((name) => m.model.source.info(name).dtype)));
  const [only] = dtypes;
  return dtypes.size === 1 && (only === 'F16' || only === 'BF16') ? only : 'F32';
}

/**
 * Merges the encoders of fine-tuned models by a rule of the registry and writes out/encoder plus,
 * per input model, the merged encoder with that model's own classifier. Everything is checked
 * before anything is written, and out/ appears complete or not at all.
 */
export async function mergeModels(opts: MergeJobOptions): Promise<MergeJobResult> {
  const started = performance.now();
  if (opts.models.length < 1) throw new UserError('merge needs at least one --model');
  refuseOutputOnInputs({ what: 'merge output', path: opts.out }, [
    ...opts.models.map((dir) => ({ what: 'model', path: dir })),
    ...(opts.base ? [{ what: 'base model', path: opts.base }] : []),
    ...(opts.fishers ?? []).map((file) => ({ what: 'Fisher file', path: file })),
    ...Object.values(opts.statistics ?? {}).flatMap((files) => files.map((file) => ({ what: 'statistic file', path: file }))),
  ]);
  refuseExistingOutput({ what: 'merge output', path: opts.out }, { kind: 'folder', overwrite: opts.overwrite === true, how: '--overwrite' });
  const rule = resolveRule(opts.method);
  const names = outputNames(opts.models);
  const inMemory: { [K in Statistic]?: readonly unknown[] } = { maskFisher: opts.maskFishers, gram: opts.grams };
  for (const [kind, given] of Object.entries(inMemory)) {
    if (given && given.length !== opts.models.length) throw new Error(`in-memory ${STATISTIC_NAMES[kind as Statistic]} statistics need one per model: got ${given.length} for ${opts.models.length} models`);
  }
  const files = statisticFiles(rule, opts)!;
  for (const kind of rule.needs.stats) {
    const given = inMemory[kind]?.length ?? files[kind]?.length ?? 0;
    if (given !== opts.models.length) throw new UserError(`--method ${rule.name} needs one --fisher file per --model: got ${given} for ${opts.models.length} models (${STATISTIC_NAMES[kind]} statistics)`);
  }
  if (opts.lambdas && opts.lambdas.length !== opts.models.length) {
    throw new UserError(`--lambda has ${opts.lambdas.length} values but ${opts.models.length} models were given`);
  }
  const members = await Promise.all(opts.models.map(member));
  for (const m of members.slice(1)) checkSameArchitecture(members[0]!, m);
  const base = opts.base ? await member(opts.base) : undefined;
  if (base) checkSameArchitecture(members[0]!, base);

  const stats: Statistics = {};
  if (opts.maskFishers) {
    stats.maskFisher = opts.maskFishers.map((fisher, j) => {
      const label = `statistics of task ${fisher.task}`;
      checkFisherMatches(label, fisher, members[j]!);
      checkStatisticValues({ file: label, tensor: 'head', shape: [fisher.numLayers, fisher.numHeads] }, fisher.head, { sumOfSquares: true });
      checkStatisticValues({ file: label, tensor: 'neuron', shape: [fisher.numLayers, fisher.intermediateSize] }, fisher.neuron, { sumOfSquares: true });
      return fisher;
    });
  }
  const fileData: { [K in Statistic]?: readonly FisherData[] } = {};
  if (opts.grams) {
    stats.gram = opts.grams.map((g, j) => inMemoryGrams(g, members[j]!));
    fileData.gram = opts.grams;
  }
  for (const kind of rule.needs.stats) {
    if (stats[kind]) continue;
    const read = READ_STATISTIC[kind] as (file: string, m: MergeMember, reference: MergeMember) => Promise<{ statistic: never; data: FisherData }>;
    const results = await Promise.all(files[kind]!.map((file, j) => read(file, members[j]!, members[0]!)));
    stats[kind] = results.map((r) => r.statistic);
    fileData[kind] = results.map((r) => r.data);
  }
  const slotIndex = new Map(members[0]!.slots.map((s, i) => [s.name, i]));
  const tensorOf = (m: MergeMember, slot: TensorSlot) => m.model.source.float32(m.slots[slotIndex.get(slot.name)!]!.name);
  const merger = slotMerger({
    slots: members[0]!.slots,
    models: members.length,
    rule,
    ...(opts.params ? { params: opts.params } : {}),
    ...(opts.modelParams ? { modelParams: opts.modelParams } : {}),
    ...(opts.lambdas ? { lambdas: opts.lambdas } : {}),
    stats,
    ...(base ? { base: (slot: TensorSlot) => tensorOf(base, slot) } : {}),
    tensor: (j, slot) => tensorOf(members[j]!, slot),
  });
  const dtype = opts.dtype ?? inputsDType(base ? [...members, base] : members);
  const first = members[0]!;
  const prefix = first.model.encoderPrefix;
  const outputs = { encoder: path.join(opts.out, 'encoder'), models: Object.fromEntries(names.map((n) => [n, path.join(opts.out, n)])) };
  // Examples and data fingerprint of each model's statistics (mask Fisher, else full Fisher, else Gram).
  const fisherMeta = members.map((_, j): FisherData | undefined => stats.maskFisher?.[j] ?? fileData.fullFisher?.[j] ?? fileData.gram?.[j]);
  const provenance: MergeProvenance = {
    method: rule.name,
    params: merger.params,
    lambdas: [...(opts.lambdas ?? members.map(() => 1))],
    base: opts.base ?? null,
    dtype,
    models: members.map((m, j) => ({
      dir: m.dir,
      fingerprint: m.fingerprint,
      params: merger.modelParams[j] ?? {},
      statistics: Object.fromEntries(rule.needs.stats.map((kind) => [kind, files[kind]?.[j] ?? 'in memory'])),
      fisher_examples: fisherMeta[j]?.examples ?? null,
      fisher_data_fingerprint: fisherMeta[j]?.dataFingerprint ?? null,
    })),
    fisher_examples: stats.maskFisher?.map((f) => f.examples) ?? null,
  };
  const result: MergeJobResult = { outputs, provenance, seconds: 0 };
  await writeDirAtomic(opts.out, async (tmp) => {
    // Every output file's header is known from the input headers, so each merged tensor goes to disk as soon as it is computed.
    const info = (shape: readonly number[]): TensorInfo => ({ dtype, shape: [...shape] });
    const writers: SafetensorsWriter[] = [];
    try {
      const encoderFile = SafetensorsWriter.create(
        path.join(tmp, 'encoder', 'model.safetensors'),
        Object.fromEntries(first.slots.map((s) => [s.name.slice(prefix.length), info(s.shape)])),
      );
      writers.push(encoderFile);
      const modelFiles = members.map((m, j) => {
        const heads = headTensorNames(m.model).map((name) => [name, info(m.model.source.info(name).shape)] as const);
        const writer = SafetensorsWriter.create(path.join(tmp, names[j]!, 'model.safetensors'), Object.fromEntries([...heads, ...m.slots.map((s) => [s.name, info(s.shape)] as const)]));
        writers.push(writer);
        return writer;
      });
      for (const [j, m] of members.entries()) {
        for (const name of headTensorNames(m.model)) modelFiles[j]!.write(name, { ...info(m.model.source.info(name).shape), data: storedTensor(dtype, name, m.model.source.float32(name), opts.out) });
      }
      // Slots in the encoder file's layout order, which is every model file's order too (same names under one prefix).
      const progress = opts.progressLabel ? new Progress({ label: opts.progressLabel, unit: 'tensors', total: encoderFile.names.length }) : undefined;
      for (const name of encoderFile.names) {
        const i = slotIndex.get(`${prefix}${name}`)!;
        const tensor = { ...info(first.slots[i]!.shape), data: storedTensor(dtype, first.slots[i]!.name, merger.merge(first.slots[i]!), opts.out) };
        encoderFile.write(name, tensor);
        members.forEach((m, j) => modelFiles[j]!.write(m.slots[i]!.name, tensor));
        progress?.add(1);
      }
      progress?.finish();
      for (const writer of writers) writer.close();
    } catch (e) {
      for (const writer of writers) writer.abort();
      throw e;
    }
    const torchDtype = { torch_dtype: TORCH_DTYPE[dtype] };
    await writeHfFolderFiles(path.join(tmp, 'encoder'), { hfConfig: { ...encoderConfig(first.model), ...torchDtype }, copyFilesFrom: first.dir });
    for (const [j, m] of members.entries()) {
      await writeHfFolderFiles(path.join(tmp, names[j]!), { hfConfig: { ...outputConfig(m.model), ...torchDtype }, copyFilesFrom: m.dir });
    }
    await fs.writeFile(path.join(tmp, 'merge.json'), `${JSON.stringify(provenance, null, 2)}\n`);
    await writeModelCards({ ...result, outputs: { encoder: path.join(tmp, 'encoder'), models: Object.fromEntries(names.map((n) => [n, path.join(tmp, n)])) } }, opts.writer ?? '`fisher-merge merge`');
  });
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

/**
 * `mergeModels` in a worker thread (node:worker_threads), tensors streamed as always: the caller's
 * event loop stays free for the whole merge, so a streaming job keeps folding batches, writing
 * checkpoints and status while a version is built. The options are copied to the thread (in-memory
 * statistics included); a UserError there is a UserError here.
 */
export function mergeModelsInThread(opts: MergeJobOptions): Promise<MergeJobResult> {
  return runInThread(threadModule(import.meta.url, 'merge-thread'), opts);
}
