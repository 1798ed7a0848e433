import { rng, tempDir } from '../support.ts';
import type { Tensor } from '@fisher-merge/core';

export { rng, tempDir };

export function randomF32(shape: number[], random: () => number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = random() * 2 - 1;
  return { dtype: 'F32', shape, data };
}

/** Builds a safetensors file by hand: the header JSON exactly as given, then the data bytes. */
export function rawSafetensors(header: unknown, data: Uint8Array, headerLength?: number): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}
