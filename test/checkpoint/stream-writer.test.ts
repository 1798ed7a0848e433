import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Tensor } from '@fisher-merge/core';
import {
  SafetensorsWriter, bf16BitsToNumber, encodeSafetensors, f16BitsToNumber, f32BitsToBf16Bits, f32BitsToF16Bits, fromFloat32, readSafetensors,
} from '@fisher-merge/checkpoint';
import { tempDir } from './helpers.ts';

const SST2 = 'data/models/sst2/model.safetensors';

function fixtureTensors(): Record<string, Tensor> {
  const file = readSafetensors(SST2);
  return Object.fromEntries(file.names().map((name) => [name, file.tensor(name)]));
}

const infos = (tensors: Record<string, Tensor>) => Object.fromEntries(Object.entries(tensors).map(([n, t]) => [n, { dtype: t.dtype, shape: t.shape }]));

describe('SafetensorsWriter', () => {
  it('streams the same bytes as the in-memory encoder, whatever order tensors arrive in', () => {
    const tensors = fixtureTensors();
    const expected = Buffer.concat(encodeSafetensors(tensors));
    const dir = tempDir();
    for (const [label, order] of [['layout', null], ['reversed', 'reverse']] as const) {
      const file = path.join(dir, `${label}.safetensors`);
      const writer = SafetensorsWriter.create(file, infos(tensors));
      const names = [...writer.names];
      if (order) names.reverse();
      for (const name of names) writer.write(name, tensors[name]!);
      writer.close();
      expect(readFileSync(file).equals(expected), label).toBe(true);
    }
    expect(readdirSync(dir).sort()).toEqual(['layout.safetensors', 'reversed.safetensors']);
  });

  it('closeAsync: the bytes are in the file when write returns, so a tensor changed after it (before the flush) does not change the file', async () => {
    const tensors = fixtureTensors();
    const expected = Buffer.concat(encodeSafetensors(tensors));
    const dir = tempDir();
    const file = path.join(dir, 'model.safetensors');
    const writer = SafetensorsWriter.create(file, infos(tensors));
    for (const name of writer.names) writer.write(name, tensors[name]!);
    const closed = writer.closeAsync();
    for (const { data } of Object.values(tensors)) new Uint8Array(data.buffer, data.byteOffset, data.byteLength).fill(0);
    expect(readdirSync(dir).filter((f) => f === 'model.safetensors')).toEqual([]);
    await closed;
    expect(readFileSync(file).equals(expected)).toBe(true);
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
  });

  it('leaves nothing behind when closed early or aborted, and refuses tensors it did not declare', () => {
    const tensors = fixtureTensors();
    const dir = tempDir();
    const file = path.join(dir, 'model.safetensors');
    const writer = SafetensorsWriter.create(file, infos(tensors));
    const [first, second] = writer.names;
    const otherShape = writer.names.find((n) => tensors[n]!.shape.join() !== tensors[second!]!.shape.join())!;
    writer.write(first!, tensors[first!]!);
    expect(() => writer.write(first!, tensors[first!]!)).toThrow(`tensor '${first}' written twice`);
    expect(() => writer.write('nope', tensors[first!]!)).toThrow("tensor 'nope' was not declared in the header");
    expect(() => writer.write(second!, tensors[otherShape]!)).toThrow(`tensor '${second}': declared`);
    expect(() => writer.close()).toThrow(`closed before tensor '${second}' was written`);
    expect(readdirSync(dir)).toEqual([]);
    const other = SafetensorsWriter.create(file, infos(tensors));
    other.write(first!, tensors[first!]!);
    other.abort();
    expect(readdirSync(dir)).toEqual([]);
  });
});

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (v: number) => ((f32[0] = v), u32[0]!);
const nextUp = (v: number) => ((u32[0] = bitsOf(v) + 1), f32[0]!);
const nextDown = (v: number) => ((u32[0] = bitsOf(v) - 1), f32[0]!);

/**
 * Between every two neighbouring positive values of a 16-bit format (the last one's successor being
 * the power of two where it overflows), the midpoint rounds to the even pattern and the float32 values
 * either side of it to the nearer neighbour; signs mirror.
 */
function checkRoundToNearestEven(encode: (bits: number) => number, decode: (bits: number) => number, maxFinite: number, overflow: number): void {
  for (let h = 0; h <= maxFinite; h++) {
    const a = decode(h);
    const b = h === maxFinite ? overflow : decode(h + 1);
    const mid = (a + b) / 2;
    expect(Math.fround(mid)).toBe(mid);
    const cases: [number, number][] = [[a, h], [mid, h % 2 === 0 ? h : h + 1], [nextDown(mid), h], [nextUp(mid), h + 1]];
    for (const [value, want] of cases) {
      if (encode(bitsOf(value)) !== want || encode(bitsOf(-value)) !== (want | 0x8000)) {
        throw new Error(`0x${h.toString(16)}: ${value} encodes as 0x${encode(bitsOf(value)).toString(16)}, expected 0x${want.toString(16)}`);
      }
    }
  }
}

describe('float32 -> F16 / BF16', () => {
  it('F16 rounds to nearest even, subnormals and overflow to infinity included', () => {
    checkRoundToNearestEven(f32BitsToF16Bits, f16BitsToNumber, 0x7bff, 65536);
    expect(f32BitsToF16Bits(bitsOf(Infinity))).toBe(0x7c00);
    expect(f32BitsToF16Bits(bitsOf(1e6))).toBe(0x7c00);
    expect(f32BitsToF16Bits(bitsOf(2 ** -26))).toBe(0);
    expect(Number.isNaN(f16BitsToNumber(f32BitsToF16Bits(bitsOf(NaN))))).toBe(true);
  });

  it('BF16 rounds to nearest even, overflow to infinity included', () => {
    checkRoundToNearestEven(f32BitsToBf16Bits, bf16BitsToNumber, 0x7f7f, 2 ** 128);
    expect(f32BitsToBf16Bits(bitsOf(-Infinity))).toBe(0xff80);
    expect(Number.isNaN(bf16BitsToNumber(f32BitsToBf16Bits(0x7f800001)))).toBe(true);
  });

  it('fromFloat32 encodes whole tensors and returns F32 data as is', () => {
    const values = new Float32Array([1, -2, 0.1, 65504]);
    expect([...(fromFloat32('F16', values) as Uint16Array)]).toEqual([...values].map((v) => f32BitsToF16Bits(bitsOf(v))));
    expect([...(fromFloat32('BF16', values) as Uint16Array)]).toEqual([...values].map((v) => f32BitsToBf16Bits(bitsOf(v))));
    expect(fromFloat32('F32', values)).toBe(values);
  });
});
