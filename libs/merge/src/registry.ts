import { clipped, shown, UserError } from '@fisher-merge/core';
import type { MergeRule, ParamSpec, ParamValue, Params } from './rule.ts';
import { breadcrumbsTies } from './rules/breadcrumbs-ties.ts';
import { breadcrumbs } from './rules/breadcrumbs.ts';
import { dareLinear } from './rules/dare-linear.ts';
import { dareTies } from './rules/dare-ties.ts';
import { dellaLinear } from './rules/della-linear.ts';
import { della } from './rules/della.ts';
import { fullFisher } from './rules/full-fisher.ts';
import { isotropic } from './rules/isotropic.ts';
import { magmax } from './rules/magmax.ts';
import { maskFisherTies } from './rules/mask-fisher-ties.ts';
import { maskFisher } from './rules/mask-fisher.ts';
import { modelStock } from './rules/model-stock.ts';
import { regmean } from './rules/regmean.ts';
import { slerp } from './rules/slerp.ts';
import { taskArithmetic } from './rules/task-arithmetic.ts';
import { ties } from './rules/ties.ts';

/** Every merge rule by name; a new rule is one file under rules/ plus one line here. */
export const MERGE_RULES: Readonly<Record<string, MergeRule>> = Object.fromEntries(
  [
    maskFisher,
    isotropic,
    taskArithmetic,
    fullFisher,
    ties,
    dareLinear,
    dareTies,
    maskFisherTies,
    breadcrumbs,
    breadcrumbsTies,
    della,
    dellaLinear,
    modelStock,
    slerp,
    magmax,
    regmean,
  ].map((r) => [r.name, r]),
);

export function resolveRule(name: string): MergeRule {
  const rule = MERGE_RULES[name];
  if (!rule) throw new UserError(`unknown merge method '${name}'; expected one of ${Object.keys(MERGE_RULES).join(', ')}`);
  return rule;
}

function checkedValue(rule: MergeRule, spec: ParamSpec, value: ParamValue | undefined, where = ''): ParamValue {
  const v = value ?? spec.default;
  const name = `parameter '${spec.name}'${where} of '${rule.name}'`;
  if (typeof v !== spec.type) throw new UserError(`${name} must be a ${spec.type}, got ${shown(v)}`);
  if (spec.choices && !spec.choices.includes(String(v))) throw new UserError(`${name} must be one of ${spec.choices.join(', ')}, got '${clipped(String(v))}'`);
  if (spec.valid && !spec.valid.test(v as number)) throw new UserError(`${name} must be ${spec.valid.expected}, got ${v}`);
  return v;
}

function checkKnown(rule: MergeRule, given: Params, specs: readonly ParamSpec[], what: string): void {
  const known = new Set(specs.map((p) => p.name));
  for (const key of Object.keys(given)) {
    if (!known.has(key)) throw new UserError(`merge method '${rule.name}' has no ${what} '${key}' (its ${what}s: ${specs.map((p) => p.name).join(', ') || 'none'})`);
  }
}

/** Fills in declared defaults and checks types and choices of a rule's parameters. */
export function resolveParams(rule: MergeRule, given: Params = {}): Params {
  checkKnown(rule, given, rule.params, 'parameter');
  return Object.fromEntries(rule.params.map((spec) => [spec.name, checkedValue(rule, spec, given[spec.name])]));
}

/** Each model's per-model parameters: its own value, else the merge-wide one (already resolved). */
export function resolveModelParams(rule: MergeRule, params: Params, given: readonly Params[]): Params[] {
  const specs = rule.params.filter((p) => p.perModel);
  return given.map((own, j) => {
    checkKnown(rule, own, specs, 'per-model parameter');
    return Object.fromEntries(specs.map((spec) => [spec.name, checkedValue(rule, spec, own[spec.name] ?? params[spec.name], ` of model ${j + 1}`)]));
  });
}
