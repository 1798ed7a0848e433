import { UserError } from '@fisher-merge/core';
import { MERGE_RULES, type MergeInputs, type MergeRule, type Params, type TensorSlot } from './rules.ts';
import { weightedAverage } from './weighted-average.ts';

export interface MergeEncodersOptions {
  /** Tensors of the shared encoder (names as in the first model). */
  slots: readonly TensorSlot[];
  /** Model j's tensor for a slot. */
  tensor: (model: number, slot: TensorSlot) => Float32Array;
  models: number;
  rule: MergeRule;
  params?: Params;
  lambdas?: readonly number[];
  inputs?: MergeInputs;
  /** With a base model, merge task vectors theta_j - base and add the result to the base. */
  base?: (slot: TensorSlot) => Float32Array;
}

export function resolveRule(name: string): MergeRule {
  const rule = MERGE_RULES[name];
  if (!rule) throw new UserError(`unknown merge method '${name}'; expected one of ${Object.keys(MERGE_RULES).join(', ')}`);
  return rule;
}

/** Fills in declared defaults and checks types and choices of a rule's parameters. */
export function resolveParams(rule: MergeRule, given: Params = {}): Params {
  const known = new Set(rule.params.map((p) => p.name));
  for (const key of Object.keys(given)) {
    if (!known.has(key)) {
      const list = rule.params.map((p) => p.name).join(', ') || 'none';
      throw new UserError(`merge method '${rule.name}' has no parameter '${key}' (its parameters: ${list})`);
    }
  }
  const out: Params = {};
  for (const spec of rule.params) {
    const value = given[spec.name] ?? spec.default;
    if (typeof value !== spec.type) throw new UserError(`parameter '${spec.name}' of '${rule.name}' must be a ${spec.type}, got ${JSON.stringify(value)}`);
    if (spec.choices && !spec.choices.includes(String(value))) {
      throw new UserError(`parameter '${spec.name}' of '${rule.name}' must be one of ${spec.choices.join(', ')}, got '${value}'`);
    }
    out[spec.name] = value;
  }
  return out;
}

/** Merges every encoder tensor by the rule; returns the merged tensors by name. */
export function mergeEncoders(opts: MergeEncodersOptions): Map<string, Float32Array> {
  const { rule, models, slots } = opts;
  const lambdas = opts.lambdas ?? Array.from({ length: models }, () => 1);
  if (lambdas.length !== models) throw new UserError(`--lambda has ${lambdas.length} values but ${models} models were given`);
  if (lambdas.some((l) => !Number.isFinite(l) || l < 0)) throw new UserError(`--lambda values must be finite and >= 0, got ${lambdas.join(',')}`);
  if (rule.combine === 'average' && lambdas.every((l) => l === 0)) throw new UserError('--lambda values are all 0: nothing to average');
  if (rule.needs.base && !opts.base) throw new UserError(`merge method '${rule.name}' needs a base model (--base DIR)`);
  if (rule.needs.maskFisher && opts.inputs?.maskFishers?.length !== models) throw new UserError(`merge method '${rule.name}' needs one mask Fisher file per model (--fisher)`);
  if (rule.needs.fullFisher && opts.inputs?.fullFishers?.length !== models) throw new UserError(`merge method '${rule.name}' needs one full Fisher file per model (--fisher)`);
  const params = resolveParams(rule, opts.params);
  const weightsFor = rule.prepare(opts.inputs ?? {}, params, slots);
  const scale = typeof params.scale === 'number' ? params.scale : 1;

  const merged = new Map<string, Float32Array>();
  for (const slot of slots) {
    const base = opts.base?.(slot);
    const thetas = Array.from({ length: models }, (_, j) => {
      const theta = opts.tensor(j, slot);
      return base ? theta.map((v, e) => v - base[e]) : theta;
    });
    const combined = rule.combine === 'sum' ? lambdaSum(thetas, lambdas) : weightedAverage(thetas, padWeights(weightsFor(slot), models), lambdas, slot.shape);
    merged.set(slot.name, base ? combined.map((v, e) => base[e] + scale * v) : combined);
  }
  return merged;
}

function padWeights<T>(weights: T[], models: number): (T | number)[] {
  return weights.length === models ? weights : Array.from({ length: models }, () => 1);
}

function lambdaSum(thetas: readonly Float32Array[], lambdas: readonly number[]): Float32Array {
  const out = new Float32Array(thetas[0].length);
  for (let e = 0; e < out.length; e++) {
    let s = 0;
    for (let j = 0; j < thetas.length; j++) s += lambdas[j] * thetas[j][e];
    out[e] = s;
  }
  return out;
}
