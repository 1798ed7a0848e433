import { z } from 'zod';
import { resolveRule } from '@fisher-merge/merge';
import { checked, choice, expected, mapping, number, section, text } from './schema.ts';
import { BASE_RENAMED, ENGINE, FISHER_KEYS, MAX_LENGTH, METHOD_KEYS, OUT, ruleParams, SAMPLE_KEYS, TASK_KEYS, TASK_RENAMED, withTask } from './sections.ts';

/** Written tensor dtypes, named as config.json's `torch_dtype` names them. */
export const DTYPES = ['float32', 'float16', 'bfloat16'] as const;

/** One input of `fisher-merge merge CONFIG.yaml`: a model with its Fisher file, or data to compute it from. */
export const MERGE_MODEL = section({
  ...TASK_KEYS,
  model: text('a model folder'),
  fisher: text('a Fisher file path').optional(),
  data: text('a data path').optional(),
  lambda: number(0).optional(),
  parameters: mapping().optional(),
}, TASK_RENAMED)
  .superRefine((m, ctx) => {
    if ((m.fisher === undefined) === (m.data === undefined)) ctx.addIssue({ code: 'custom', path: [], message: "needs exactly one of 'fisher' (a Fisher file) or 'data' (examples to compute it from)" });
  })
  .transform(checked((m) => (m.data === undefined ? { ...m, spec: undefined } : withTask(m))));

/** mergekit's vocabulary: `merge_method`, `base_model`, `models`, `parameters`, `dtype`, plus `out`. */
export const MERGE_KEYS = {
  ...METHOD_KEYS,
  merge_method: METHOD_KEYS.merge_method.default('mask-fisher'),
  base_model: text('a base model folder').optional(),
  models: z.array(MERGE_MODEL, expected('a list of two or more models')).min(2, expected('a list of two or more models')),
  dtype: choice(DTYPES).default('float32'),
  out: OUT,
  engine: ENGINE,
  max_length: MAX_LENGTH,
  /** For models given `data`. */
  fisher: section({ ...FISHER_KEYS, ...SAMPLE_KEYS }).prefault({}),
};

export const MERGE_CONFIG = section(MERGE_KEYS, BASE_RENAMED)
  .superRefine((c, ctx) => {
    if (resolveRule(c.merge_method).needs.base && c.base_model === undefined) {
      ctx.addIssue({ code: 'custom', path: ['base_model'], message: `expected a base model folder (method ${c.merge_method} needs one), got nothing` });
    }
  })
  .transform(checked((c) => ({ ...c, ...ruleParams(c.merge_method, c.parameters) })));

export type MergeConfigKeys = z.output<typeof MERGE_CONFIG>;
