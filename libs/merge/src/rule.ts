import type { Gram, MaskFisher } from '@fisher-merge/fisher';

/** A tensor of the shared encoder and the role its rows play (from the family description). */
export interface TensorSlot {
  name: string;
  role: 'query' | 'key' | 'value' | 'attnOut' | 'attnNorm' | 'ffnIn' | 'ffnOut' | 'ffnNorm' | 'embeddings' | 'pooler';
  layer?: number;
  param: 'weight' | 'bias';
  shape: number[];
}

/** Per-parameter statistics with the encoder's tensor names (full diagonal Fisher). */
export type ParameterStats = (name: string) => Float32Array;

/**
 * One model's input Gram (RegMean) of the linear whose weight a slot is, with the input's name (query,
 * key and value share one); undefined for a tensor RegMean averages.
 */
export type GramOfSlot = (slot: TensorSlot) => (Gram & { input: string }) | undefined;

/** The statistics a rule can declare it needs; the job supplies one per model. */
export interface Statistics {
  maskFisher?: readonly MaskFisher[];
  fullFisher?: readonly ParameterStats[];
  gram?: readonly GramOfSlot[];
}
export type Statistic = keyof Statistics;

export type ParamValue = number | boolean | string;
export type Params = Record<string, ParamValue>;

export interface ParamSpec {
  name: string;
  type: 'number' | 'boolean' | 'string';
  default: ParamValue;
  choices?: readonly string[];
  /** A further check of a number, with what it expects (e.g. "a number in (0, 1]"). */
  valid?: { test: (value: number) => boolean; expected: string };
  /** May also be given per model (mergekit's per-model `parameters`); the merge-wide value is the default. */
  perModel?: boolean;
  help: string;
}

/** What a rule sees for one tensor slot. */
export interface SlotInput {
  slot: TensorSlot;
  /** Each model's tensor. */
  tensors: readonly Float32Array[];
  /** The base model's tensor, when the merge has one. */
  base?: Float32Array;
  /** Each model's weight (`--lambda`, mergekit's per-model `weight`). */
  weights: readonly number[];
  params: Params;
  /** Each model's values of the rule's per-model parameters. */
  modelParams: readonly Params[];
}

/** What a rule sees once per merge, before its tensors. */
export interface MergeContext {
  stats: Statistics;
  params: Params;
  slots: readonly TensorSlot[];
  /** Each model's values of the rule's per-model parameters (one entry per model). */
  modelParams: readonly Params[];
}

export interface MergeRule {
  name: string;
  summary: string;
  params: readonly ParamSpec[];
  /**
   * The statistics the job must supply (one per model), whether a base model is required, and the
   * exact number of models where the rule has one (slerp: 2).
   */
  needs: { stats: readonly Statistic[]; base: boolean; models?: number };
  /** false: per-model weights (lambdas) do not enter the merge (slerp, magmax), so a coefficient search leaves them alone. */
  weighted?: false;
  /** Runs once per merge (derived weights, norms over every tensor) and returns the per-slot merge. */
  prepare(context: MergeContext): (input: SlotInput) => Float32Array;
}

// Parameters shared by several rules, declared once.
export const DENSITY: ParamSpec = {
  name: 'density',
  type: 'number',
  default: 1,
  valid: { test: (v) => v > 0 && v <= 1, expected: 'a number in (0, 1]' },
  perModel: true,
  help: 'fraction of each task vector kept',
};
export const SCALE: ParamSpec = { name: 'scale', type: 'number', default: 1, help: 'scaling coefficient of the combined task vectors' };
export const SEED: ParamSpec = {
  name: 'seed',
  type: 'number',
  default: 0,
  valid: { test: (v) => Number.isInteger(v) && v >= 0, expected: 'an integer >= 0' },
  help: 'seed of the random drop (the same seed gives the same merge)',
};
export const GAMMA: ParamSpec = {
  name: 'gamma',
  type: 'number',
  default: 0.01,
  valid: { test: (v) => v >= 0 && v < 1, expected: 'a number in [0, 1)' },
  perModel: true,
  help: 'fraction of each task vector dropped from the top by magnitude (outliers), before the smallest are dropped down to density',
};
export const EPSILON: ParamSpec = {
  name: 'epsilon',
  type: 'number',
  default: 0.15,
  valid: { test: (v) => v >= 0 && v < 0.5, expected: 'a number in [0, 0.5)' },
  perModel: true,
  help: 'half-width of the keep probabilities around density, smallest |t| of a row at density - epsilon, largest at density + epsilon',
};
