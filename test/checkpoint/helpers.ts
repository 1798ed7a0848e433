import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Tensor } from '@fisher-merge/core';

/** mulberry32: a small seeded PRNG so fuzz cases and random weights are reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomF32(shape: number[], random: () => number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = random() * 2 - 1;
  return { dtype: 'F32', shape, data };
}

export function tempDir(prefix = 'fm-ckpt-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
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
