import { z } from 'zod';
import { resolveRule } from '@fisher-merge/merge';
import { checked, choice, expected, int, number, section, text } from './schema.ts';
import { BASE_RENAMED, ENGINE, FULL_FISHER_SECTION, FISHER_KEYS, GRAM_SECTION, MAX_LENGTH, METHOD_KEYS, METHOD_RENAMED, OUT, OVERWRITE, ruleParams, SAMPLE_KEYS, TASK_KEYS, TASK_RENAMED, taskList, withTask } from './sections.ts';

/** `fisher-merge run CONFIG.yaml`: Fisher of every task, merges of task groups by every method, evaluation. */
export const RUN_TASK = section({ ...TASK_KEYS, model: text('a model folder'), train: text('a training data path'), validation: text('a validation data path').optional() }, TASK_RENAMED)
  .transform(checked(withTask));

/** A method: a rule name, or `{ merge_method, parameters, label }`; `label` names its results and folder. */
export const RUN_METHOD = z.preprocess(
  (m) => (typeof m === 'string' ? { merge_method: m } : m),
  section({ ...METHOD_KEYS, label: text().regex(/^[\w.-]+$/, expected('a name of letters, digits, ".", "_" or "-" (it names a folder)')).optional() }, METHOD_RENAMED),
).transform(checked((m) => {
  const { rule, params } = ruleParams(m.merge_method, m.parameters);
  return { label: m.label ?? rule, rule, params };
}));

const MERGE_GROUP = z.union([z.literal('all'), z.array(text('a task name')).min(2)], expected("a list of two or more task names, or 'all'"));

export const RUN_KEYS = {
  out: OUT.default('out'),
  overwrite: OVERWRITE,
  engine: ENGINE,
  max_length: MAX_LENGTH,
  tasks: taskList(RUN_TASK),
  fisher: section({ ...FISHER_KEYS, ...SAMPLE_KEYS }).prefault({}),
  full_fisher: FULL_FISHER_SECTION,
  gram: GRAM_SECTION,
  methods: z.array(RUN_METHOD, expected('a non-empty list of methods')).min(1, expected('a non-empty list of methods')).prefault(['mask-fisher']),
  base_model: text('a base model folder').optional(),
  merges: z.array(MERGE_GROUP, expected('a non-empty list of merges')).min(1, expected('a non-empty list of merges')).optional(),
  /**
   * Coefficient search: per-model weights where the rule uses them, and `scale` or `t` where it has one, chosen on a held-out
   * share of each validation split, whose rows are then left out of every reported score.
   */
  search: section({
    holdout: z.number(expected('a number in (0, 1)')).gt(0, expected('a number in (0, 1)')).lt(1, expected('a number in (0, 1)')).default(0.5),
    seed: int(0).default(0),
    strategy: choice(['coordinate', 'grid']).default('coordinate'),
    budget: int(1).default(12),
    weights: z.array(number(0), expected('a list of numbers >= 0')).min(1, expected('a list of numbers >= 0')).default([0.5, 1, 1.5]),
    scale: z.array(number(0), expected('a list of numbers >= 0')).min(1, expected('a list of numbers >= 0')).default([0.5, 1, 1.5]),
    /** slerp's interpolation position. */
    t: z.array(number(0).max(1, expected('a number in [0, 1]')), expected('a list of numbers in [0, 1]')).min(1, expected('a list of numbers in [0, 1]')).default([0.25, 0.5, 0.75]),
    /** Method labels to search; default: every method. */
    methods: z.array(text('a method label')).optional(),
  }).optional(),
  /** `false` evaluates nothing. */
  evaluation: z.union([z.literal(false), section({ limit: int(1).optional(), batch_size: int(1).default(64) })], expected('a mapping or false')).prefault({}),
  /** Merged folders kept under out/merges: all, each merge's best method, or none (the table and report only). */
  save_models: choice(['all', 'best', 'none']).default('none'),
};

export const RUN_CONFIG = section(RUN_KEYS, { output: "renamed to 'out'", ...BASE_RENAMED })
  .superRefine((c, ctx) => {
    const names = c.tasks.map((t) => t.name);
    c.methods.forEach((m, i) => {
      if (c.methods.findIndex((o) => o.label === m.label) !== i) ctx.addIssue({ code: 'custom', path: ['methods', i], message: `expected a label other than '${m.label}' (used twice: give one of them a label), got ${JSON.stringify(m.label)}` });
      const { needs } = resolveRule(m.rule);
      if (needs.base && c.base_model === undefined) ctx.addIssue({ code: 'custom', path: ['base_model'], message: `expected a base model folder (method ${m.label} needs one), got nothing` });
      const count = needs.models;
      if (count === undefined) return;
      (c.merges ?? ['all']).forEach((group, k) => {
        const size = group === 'all' ? names.length : group.length;
        if (size !== count) ctx.addIssue({ code: 'custom', path: c.merges ? ['merges', k] : ['merges'], message: `expected merges of ${count} tasks (method ${m.label} merges exactly ${count} models), got ${size}` });
      });
    });
    c.merges?.forEach((group, i) => {
      if (group === 'all') return;
      group.forEach((name, k) => {
        if (!names.includes(name)) ctx.addIssue({ code: 'custom', path: ['merges', i, k], message: `expected one of ${names.join(', ')}, got ${JSON.stringify(name)}` });
      });
    });
    c.search?.methods?.forEach((label, i) => {
      if (!c.methods.some((m) => m.label === label)) ctx.addIssue({ code: 'custom', path: ['search', 'methods', i], message: `expected one of ${c.methods.map((m) => m.label).join(', ')}, got ${JSON.stringify(label)}` });
    });
    if (c.search && c.evaluation === false) ctx.addIssue({ code: 'custom', path: ['search'], message: 'needs evaluation (a search scores merges on validation data)' });
    if (c.save_models === 'best' && c.evaluation === false) {
      ctx.addIssue({ code: 'custom', path: ['save_models'], message: "expected all or none when evaluation is off ('best' is judged by the validation scores), got \"best\"" });
    }
    if (c.evaluation !== false) {
      c.tasks.forEach((t, i) => {
        if (t.validation === undefined) ctx.addIssue({ code: 'custom', path: ['tasks', i, 'validation'], message: 'expected a validation split path (or set evaluation: false), got nothing' });
      });
    }
  })
  .transform((c) => {
    const names = c.tasks.map((t) => t.name);
    return { ...c, merges: (c.merges ?? [names]).map((g) => (g === 'all' ? names : g)), evaluation: c.evaluation === false ? undefined : c.evaluation };
  });

export type RunConfigKeys = z.output<typeof RUN_CONFIG>;
