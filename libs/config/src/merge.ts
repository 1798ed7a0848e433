import { z } from 'zod';
import { isUserError, shown, UserError } from '@fisher-merge/core';
import { resolveModelParams, resolveRule, type Params } from '@fisher-merge/merge';
import { checked, choice, expected, mapping, section, text } from './schema.ts';
import { BASE_RENAMED, ENGINE, FISHER_KEYS, FULL_FISHER_SECTION, GRAM_SECTION, MAX_LENGTH, METHOD_KEYS, OUT, OVERWRITE, ruleParams, SAMPLE_KEYS, TASK_KEYS, TASK_RENAMED, withTask } from './sections.ts';

/** Written tensor dtypes, named as config.json's `torch_dtype` names them. */
export const DTYPES = ['float32', 'float16', 'bfloat16'] as const;

/** Examples to compute a model's Fisher from: `path`, the task's keys, and optionally `samples` and `seed`. */
export const MERGE_DATA = section({ path: text('a data path'), ...TASK_KEYS, ...SAMPLE_KEYS }, TASK_RENAMED).transform(checked(withTask));

/**
 * One input of `fisher-merge merge CONFIG.yaml`: a model, its Fisher file or the data to compute it
 * from (when the method needs statistics), and its `parameters`: mergekit's `weight` and the rule's
 * per-model parameters (e.g. `density`).
 */
export const MERGE_MODEL = section({
  model: text('a model folder'),
  fisher: text('a Fisher file path').optional(),
  data: MERGE_DATA.optional(),
  parameters: mapping().prefault({}),
}, { lambda: "renamed to 'parameters.weight' (mergekit's name)" })
  .superRefine((m, ctx) => {
    if (m.fisher !== undefined && m.data !== undefined) ctx.addIssue({ code: 'custom', path: [], message: "needs at most one of 'fisher' (a Fisher file) or 'data' (examples to compute it from)" });
  })
  .transform(checked((m) => {
    const { weight = 1, ...params } = m.parameters;
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) throw new UserError(`parameters.weight: expected a number >= 0, got ${shown(weight)}`);
    return { ...m, weight, parameters: params as Params };
  }));

/** mergekit's vocabulary: `merge_method`, `base_model`, `models`, `parameters`, `dtype`, plus `out`. */
export const MERGE_KEYS = {
  ...METHOD_KEYS,
  merge_method: METHOD_KEYS.merge_method.default('mask-fisher'),
  base_model: text('a base model folder').optional(),
  models: z.array(MERGE_MODEL, expected('a list of two or more models')).min(2, expected('a list of two or more models')),
  /** Default: the inputs' dtype where they agree, else float32. */
  dtype: choice(DTYPES).optional(),
  out: OUT,
  overwrite: OVERWRITE,
  engine: ENGINE,
  max_length: MAX_LENGTH,
  /** For models given `data`. */
  fisher: section({ ...FISHER_KEYS, ...SAMPLE_KEYS }).prefault({}),
  full_fisher: FULL_FISHER_SECTION,
  gram: GRAM_SECTION,
};

export const MERGE_CONFIG = section(MERGE_KEYS, BASE_RENAMED)
  .superRefine((c, ctx) => {
    const rule = resolveRule(c.merge_method);
    if (rule.needs.base && c.base_model === undefined) {
      ctx.addIssue({ code: 'custom', path: ['base_model'], message: `expected a base model folder (method ${c.merge_method} needs one), got nothing` });
    }
    if (rule.needs.models !== undefined && c.models.length !== rule.needs.models) {
      ctx.addIssue({ code: 'custom', path: ['models'], message: `expected ${rule.needs.models} models (method ${rule.name} merges exactly ${rule.needs.models}), got ${c.models.length}` });
    }
    c.models.forEach((m, i) => {
      const given = m.fisher !== undefined || m.data !== undefined;
      if (rule.needs.stats.length > 0 && !given) ctx.addIssue({ code: 'custom', path: ['models', i], message: `method ${rule.name} needs 'fisher' (a Fisher file) or 'data' (examples to compute it from)` });
      if (rule.needs.stats.length === 0 && given) ctx.addIssue({ code: 'custom', path: ['models', i, m.fisher !== undefined ? 'fisher' : 'data'], message: `method ${rule.name} uses no Fisher statistics; leave it out` });
    });
  })
  .transform(checked((c) => {
    const { rule, params } = ruleParams(c.merge_method, c.parameters);
    const modelParams = c.models.map((m, i) => {
      try {
        return resolveModelParams(resolveRule(rule), params, [m.parameters])[0]!;
      } catch (e) {
        throw isUserError(e) ? new UserError(`models[${i}].parameters: ${e.message}`) : e;
      }
    });
    return { ...c, rule, params, modelParams };
  }));

export type MergeConfigKeys = z.output<typeof MERGE_CONFIG>;
