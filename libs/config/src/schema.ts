import { z } from 'zod';
import { clipped, isUserError, shown, UserError } from '@fisher-merge/core';

/** The error option of a schema: every failure reads `expected WHAT, got VALUE`. */
export function expected(what: string): { error: (issue: { input?: unknown }) => string } {
  return { error: (issue) => `expected ${what}, got ${shown(issue.input)}` };
}

export const int = (min: number) => z.int(expected(`an integer >= ${min}`)).min(min, expected(`an integer >= ${min}`));
export const number = (min: number) => z.number(expected(`a number >= ${min}`)).min(min, expected(`a number >= ${min}`));
/** A number > 0 (seconds between events, say). */
export const positive = () => z.number(expected('a number > 0')).positive(expected('a number > 0'));
export const text = (what = 'a non-empty string') => z.string(expected(what)).refine((s) => s.trim() !== '', expected(what));
export const choice = <const T extends readonly [string, ...string[]]>(values: T) => z.enum(values, expected(`one of ${values.join(', ')}`));
export const flag = () => z.boolean(expected('true or false'));
/** Free-form `key: value` pairs, checked by their owner (a merge rule's parameters). */
export const mapping = () => z.record(z.string(), z.unknown(), expected('a mapping'));

/**
 * One section of a config: a mapping whose keys are exactly `shape`'s. A key of an older vocabulary
 * is refused with where it went (`renamed`: old key -> message), never silently accepted.
 * Extend a section by spreading its shape: `section({ ...FISHER_KEYS, more: int(1).optional() })`.
 */
export function section<S extends z.ZodRawShape>(shape: S, renamed: Record<string, string> = {}) {
  const known = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) => {
      if (issue.code !== 'unrecognized_keys') return `expected a mapping, got ${shown(issue.input)}`;
      const key = issue.keys[0]!;
      return renamed[key] ?? `unknown key (known: ${known})`;
    },
  });
}

/**
 * Runs a check that throws `UserError` (a merge rule resolving its parameters, a task preset) inside a
 * schema, so its message is reported at the key's path; returns the check's result.
 */
export function checked<I, O>(run: (value: I) => O) {
  return (value: I, ctx: z.RefinementCtx): O => {
    try {
      return run(value);
    } catch (e) {
      if (!isUserError(e)) throw e;
      ctx.addIssue({ code: 'custom', message: e.message, input: value });
      return z.NEVER;
    }
  };
}

/** `tasks[1].samples`; `(top level)` for the document itself. */
export function keyPath(path: readonly PropertyKey[]): string {
  let out = '';
  // A key is input too: a 52 MB key name is cut like any echoed value.
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : `${out ? '.' : ''}${clipped(String(part))}`;
  return out || '(top level)';
}

/** Empty YAML values (`key:`) mean the key is absent. */
function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNulls);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null).map(([k, v]) => [k, dropNulls(v)]));
}

/** Validates a parsed document; the first problem becomes one line: `FILE: key.path: message`. */
export function parseConfig<T extends z.ZodType>(schema: T, doc: unknown, file: string): z.output<T> {
  const result = schema.safeParse(doc === null ? undefined : dropNulls(doc));
  if (result.success) return result.data;
  // An unknown or renamed key explains the missing key next to it, so it is the line worth showing.
  const issues = result.error.issues;
  const issue = issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0]!;
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
  throw new UserError(`${file}: ${keyPath(path)}: ${issue.message}`);
}
