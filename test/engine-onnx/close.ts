import { expect } from 'vitest';

export const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/** Within 1e-5 of `scale` (default: the largest magnitude wanted): the rounding of a different GEMM blocking. */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, scale = maxAbs(want)): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) if (!(Math.abs(got[i] - want[i]) <= 1e-5 * scale)) expect.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]}`);
}
