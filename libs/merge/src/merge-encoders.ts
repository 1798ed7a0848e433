import { UserError } from '@fisher-merge/core';
import type { MergeRule, Params, SlotInput, Statistics, TensorSlot } from './rule.ts';
import { resolveModelParams, resolveParams } from './registry.ts';

export interface MergeEncodersOptions {
  /** Tensors of the shared encoder (names as in the first model). */
  slots: readonly TensorSlot[];
  /** Model j's tensor for a slot. */
  tensor: (model: number, slot: TensorSlot) => Float32Array;
  models: number;
  rule: MergeRule;
  params?: Params;
  /** Per-model parameters (e.g. density), one entry per model. */
  modelParams?: readonly Params[];
  lambdas?: readonly number[];
  /** The statistics the rule declared, one per model. */
  stats?: Statistics;
  /** With a base model, rules merge task vectors theta_j - base and add the result to the base. */
  base?: (slot: TensorSlot) => Float32Array;
}

export interface SlotMerger {
  /** The effective parameters, defaults included. */
  params: Params;
  modelParams: Params[];
  merge(slot: TensorSlot): Float32Array;
}

/** Checks a merge's inputs against the rule and returns the merge of one tensor slot at a time. */
export function slotMerger(opts: MergeEncodersOptions): SlotMerger {
  const { rule, models, slots } = opts;
  const lambdas = opts.lambdas ?? Array.from({ length: models }, () => 1);
  if (lambdas.length !== models) throw new UserError(`--lambda has ${lambdas.length} values but ${models} models were given`);
  if (lambdas.some((l) => !Number.isFinite(l) || l < 0)) throw new UserError(`--lambda values must be finite and >= 0, got ${lambdas.join(',')}`);
  if (rule.needs.base && !opts.base) throw new UserError(`merge method '${rule.name}' needs a base model (--base DIR)`);
  if (rule.needs.models !== undefined && models !== rule.needs.models) throw new UserError(`merge method '${rule.name}' merges exactly ${rule.needs.models} models, got ${models}`);
  const stats = opts.stats ?? {};
  for (const kind of rule.needs.stats) {
    if (stats[kind]?.length !== models) throw new UserError(`merge method '${rule.name}' needs one ${STATISTIC_NAMES[kind]} file per model (--fisher)`);
  }
  const params = resolveParams(rule, opts.params);
  const modelParams = resolveModelParams(rule, params, opts.modelParams ?? Array.from({ length: models }, () => ({})));
  const mergeSlot = rule.prepare({ stats, params, slots, modelParams });
  const merge = (slot: TensorSlot) => {
    const input: SlotInput = { slot, tensors: Array.from({ length: models }, (_, j) => opts.tensor(j, slot)), weights: lambdas, params, modelParams };
    const base = opts.base?.(slot);
    return mergeSlot(base ? { ...input, base } : input);
  };
  return { params, modelParams, merge };
}

export const STATISTIC_NAMES: Readonly<Record<keyof Statistics, string>> = { maskFisher: 'mask Fisher', fullFisher: 'full Fisher', gram: 'Gram (fisher --kind gram)' };

/** Merges every encoder tensor by the rule; returns the merged tensors by name. */
export function mergeEncoders(opts: MergeEncodersOptions): Map<string, Float32Array> {
  const { merge } = slotMerger(opts);
  return new Map(opts.slots.map((slot) => [slot.name, merge(slot)]));
}
