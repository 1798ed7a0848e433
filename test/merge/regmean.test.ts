// The regmean rule (shared/docs/method.md section 7) on tensors small enough to solve by hand, and its properties.
import { describe, expect, it } from 'vitest';
import { isUserError } from '@fisher-merge/core';
import { choleskyInPlace, choleskySolveInPlace, mergeEncoders, NotPositiveDefinite, resolveRule, type GramOfSlot, type TensorSlot } from '@fisher-merge/merge';

const rule = resolveRule('regmean');
const slots: TensorSlot[] = [
  { name: 'l0.query.weight', role: 'query', layer: 0, param: 'weight', shape: [1, 2] },
  { name: 'l0.key.weight', role: 'key', layer: 0, param: 'weight', shape: [1, 2] },
  { name: 'l0.query.bias', role: 'query', layer: 0, param: 'bias', shape: [1] },
];
/** Every weight slot reads one input of width 2 with this Gram sum and count. */
const gram = (sum: number[], count: number): GramOfSlot => (slot) => (slot.param === 'weight' ? { input: `${slot.layer}.query`, sum: Float64Array.from(sum), count } : undefined);
const weights = [
  new Map([['l0.query.weight', [1, 2]], ['l0.key.weight', [0, 4]], ['l0.query.bias', [1]]]),
  new Map([['l0.query.weight', [3, -1]], ['l0.key.weight', [2, 0]], ['l0.query.bias', [4]]]),
];
const merge = (grams: GramOfSlot[], opts: { params?: Record<string, number>; lambdas?: number[]; models?: number } = {}) =>
  mergeEncoders({ slots, models: opts.models ?? 2, rule, tensor: (j, slot) => Float32Array.from(weights[j]!.get(slot.name)!), stats: { gram: grams }, ...(opts.params ? { params: opts.params } : {}), ...(opts.lambdas ? { lambdas: opts.lambdas } : {}) });

const expectValues = (got: Float32Array, want: number[]) => want.forEach((v, i) => expect(got[i]).toBeCloseTo(v, 6));

describe('the Cholesky solve', () => {
  it('solves A X = B for a random positive definite A (residual at rounding level) and refuses a semi-definite one', () => {
    let seed = 5;
    const r = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
    const n = 37, m = 5;
    const x = Array.from({ length: (n + 3) * n }, r);
    const a = new Float64Array(n * n);
    for (let row = 0; row < n + 3; row++) for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) a[i * n + k]! += x[row * n + i]! * x[row * n + k]!;
    const b = Float64Array.from({ length: n * m }, r);
    const [factor, solution] = [a.slice(), b.slice()];
    choleskyInPlace(factor, n);
    choleskySolveInPlace(factor, n, solution, m);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < m; c++) {
        let ax = 0;
        for (let k = 0; k < n; k++) ax += a[i * n + k]! * solution[k * m + c]!;
        expect(Math.abs(ax - b[i * m + c]!)).toBeLessThan(1e-9);
      }
    }
    // Rank n - 1: x x^T summed over n - 1 rows.
    const low = new Float64Array(n * n);
    for (let row = 0; row < n - 1; row++) for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) low[i * n + k]! += x[row * n + i]! * x[row * n + k]!;
    expect(() => choleskyInPlace(low, n)).toThrow(NotPositiveDefinite);
  });
});

describe('regmean', () => {
  // G1 = [[2,0],[0,1]] (sum 4G over 4 positions), G2 = [[1,1],[1,2]]: sum G = [[3,1],[1,3]].
  const grams = [gram([8, 0, 0, 4], 4), gram([1, 1, 1, 2], 1)];

  it('solves (G1 + G2) W* ^T = G1 W1^T + G2 W2^T for each weight (worked by hand), and averages the rest', () => {
    const merged = merge(grams);
    // query: rhs = [2,2] + [2,1] = [4,3]; [[3,1],[1,3]]^-1 [4,3] = [9/8, 5/8]
    expectValues(merged.get('l0.query.weight')!, [9 / 8, 5 / 8]);
    // key: rhs = [0,4] + [2,2] = [2,6]; inverse [[3,-1],[-1,3]]/8 -> [0, 2]
    expectValues(merged.get('l0.key.weight')!, [0, 2]);
    expectValues(merged.get('l0.query.bias')!, [2.5]);
  });

  it('alpha 0 weights each input feature by each model mean squared input; lambda multiplies each Gram', () => {
    // diag G1 = [2,1], diag G2 = [1,2]: query = [(2*1 + 1*3)/3, (1*2 + 2*-1)/3]
    expectValues(merge(grams, { params: { alpha: 0 } }).get('l0.query.weight')!, [5 / 3, 0]);
    // lambda (1, 2): [(2*1 + 2*3)/4, (1*2 + 4*-1)/5]; the bias stays the plain mean
    const weighted = merge(grams, { params: { alpha: 0 }, lambdas: [1, 2] });
    expectValues(weighted.get('l0.query.weight')!, [2, -0.4]);
    expectValues(weighted.get('l0.query.bias')!, [2.5]);
  });

  it('returns a single model unchanged', () => {
    const merged = merge([grams[1]!], { models: 1 });
    for (const slot of slots) expectValues(merged.get(slot.name)!, weights[0]!.get(slot.name)!);
  });

  it('refuses a singular summed Gram in one line naming the tensor, and ridge makes it solvable', () => {
    const singular = [gram([1, 1, 1, 1], 1), gram([2, 2, 2, 2], 1)];
    try {
      merge(singular);
      expect.unreachable();
    } catch (e) {
      expect(isUserError(e)).toBe(true);
      expect((e as Error).message).toMatch(/^regmean: the summed Gram of 'l0\.(query|key)\.weight' .*singular.*ridge/);
      expect((e as Error).message).not.toContain('\n');
    }
    const ridged = merge(singular, { params: { ridge: 1e-3 } });
    for (const slot of slots) expect(ridged.get(slot.name)!.every(Number.isFinite)).toBe(true);
  });

  it('refuses alpha outside [0, 1] and a negative ridge', () => {
    expect(() => merge(grams, { params: { alpha: 1.5 } })).toThrow(/alpha.*\[0, 1\]/);
    expect(() => merge(grams, { params: { ridge: -1 } })).toThrow(/ridge.*>= 0/);
  });
});
