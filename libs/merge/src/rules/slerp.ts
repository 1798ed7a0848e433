import type { MergeRule } from '../rule.ts';
import { addToBase, dot, taskVectors } from '../task-vectors.ts';
import { weightedSum } from '../weighted-average.ts';

/**
 * mergekit's slerp coefficients of v0 and v1 at t: with d the cosine of their directions (a norm
 * at most 1e-8 is not divided by), sin((1 - t) theta) / sin theta and sin(t theta) / sin theta for
 * theta = acos d, or the linear (1 - t, t) where |d| > 0.9995 (nearly colinear).
 */
export function slerpCoefficients(v0: Float32Array, v1: Float32Array, t: number): [number, number] {
  const length = (v: Float32Array) => {
    const n = Math.sqrt(dot(v, v));
    return n > 1e-8 ? n : 1;
  };
  const d = dot(v0, v1) / (length(v0) * length(v1));
  if (Math.abs(d) > 0.9995) return [1 - t, t];
  const theta = Math.acos(d);
  return [Math.sin((1 - t) * theta) / Math.sin(theta), Math.sin(t * theta) / Math.sin(theta)];
}

export const slerp: MergeRule = {
  name: 'slerp',
  summary: 'Spherical linear interpolation of exactly two models (of their task vectors with a base), per tensor; lambdas are not used.',
  params: [{ name: 't', type: 'number', default: 0.5, valid: { test: (v) => v >= 0 && v <= 1, expected: 'a number in [0, 1]' }, help: 'interpolation position: 0 is the first model, 1 the second' }],
  needs: { stats: [], base: false, models: 2 },
  weighted: false,
  prepare({ params }) {
    const t = Number(params.t);
    return ({ tensors, base }) => {
      const [v0, v1] = taskVectors(tensors, base);
      return addToBase(weightedSum([v0, v1], slerpCoefficients(v0, v1, t)), base);
    };
  },
};
