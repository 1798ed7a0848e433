import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError, type Tensor } from '@fisher-merge/core';
import { encodeSafetensors, parseSafetensors, readSafetensors, writeSafetensors, bf16BitsToNumber, f16BitsToNumber } from '@fisher-merge/checkpoint';
import { rawSafetensors, tempDir } from './helpers.ts';

const SST2 = 'data/models/sst2/model.safetensors';

function expectUserError(fn: () => unknown, message: string | RegExp): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(UserError);
  if (typeof message === 'string') expect((error as Error).message).toBe(message);
  else expect((error as Error).message).toMatch(message);
}

describe('safetensors header', () => {
  it('writes the 8-byte LE length, sorted JSON, {"format":"pt"} and space padding to 8 bytes', async () => {
    const file = path.join(tempDir(), 'model.safetensors');
    await writeSafetensors(file, {
      b: { dtype: 'F32', shape: [2], data: new Float32Array([1, -2]) },
      a: { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) },
    });
    const bytes = readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const json = '{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F16","shape":[1],"data_offsets":[8,10]},"__metadata__":{"format":"pt"}}';
    expect(json.length).toBe(139);
    expect(headerLength).toBe(144);
    expect(bytes.subarray(8, 8 + headerLength).toString('utf8')).toBe(json + '     ');
    expect(bytes.length).toBe(8 + 144 + 10);
    expect([...bytes.subarray(152, 160)]).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]); // 1.0f, -2.0f LE
    expect([...bytes.subarray(160)]).toEqual([0x00, 0x3c]);
  });

  it('re-encodes a Python-written checkpoint byte for byte', () => {
    const file = readSafetensors(SST2);
    const tensors: Record<string, Tensor> = {};
    for (const name of file.names()) tensors[name] = file.tensor(name);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(Buffer.compare(Buffer.concat(encodeSafetensors(tensors)), readFileSync(SST2))).toBe(0);
  });

  it('reads info and values of the fixture', () => {
    const file = readSafetensors(SST2);
    expect(file.names()).toHaveLength(41);
    expect(file.info('classifier.weight')).toEqual({ dtype: 'F32', shape: [2, 128] });
    const raw = readFileSync(SST2);
    const headerLength = Number(raw.readBigUInt64LE(0));
    const offsets = JSON.parse(raw.subarray(8, 8 + headerLength).toString())['classifier.bias'].data_offsets as [number, number];
    const expected = raw.subarray(8 + headerLength + offsets[0], 8 + headerLength + offsets[1]);
    expect(file.float32('classifier.bias')).toEqual(new Float32Array(expected.buffer.slice(expected.byteOffset, expected.byteOffset + 8)));
    expect(file.float64('classifier.bias')[1]).toBe(file.float32('classifier.bias')[1]);
  });

  it('keeps custom metadata and omits an empty one', () => {
    const t = { x: { dtype: 'I64', shape: [2], data: new BigInt64Array([-1n, 5n]) } as Tensor };
    const withMeta = parseSafetensors(Buffer.concat(encodeSafetensors(t, { format: 'pt', note: 'hi' })));
    expect(withMeta.metadata).toEqual({ format: 'pt', note: 'hi' });
    expect([...(withMeta.tensor('x').data as BigInt64Array)]).toEqual([-1n, 5n]);
    const header = Buffer.concat(encodeSafetensors(t, {})).subarray(8).toString();
    expect(header).not.toContain('__metadata__');
  });

  it('checks tensor data against its dtype when writing', () => {
    expect(() => encodeSafetensors({ x: { dtype: 'F32', shape: [1], data: new Float64Array(1) } })).toThrow("tensor 'x': F32 data must be a Float32Array, got Float64Array");
    const u8 = parseSafetensors(Buffer.concat(encodeSafetensors({ b: { dtype: 'U8', shape: [2], data: Buffer.from([7, 9]) } })));
    expect([...(u8.tensor('b').data as Uint8Array)]).toEqual([7, 9]);
  });
});

describe('float conversions', () => {
  // Independent of the reader: assemble the float32 bit pattern of each binary16 value.
  function f16ViaF32Bits(h: number): number {
    const sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let frac = h & 0x3ff;
    let bits: number;
    if (exp === 0x1f) bits = sign | 0x7f800000 | (frac << 13);
    else if (exp === 0) {
      if (frac === 0) bits = sign;
      else {
        exp = 1;
        while ((frac & 0x400) === 0) {
          frac <<= 1;
          exp--;
        }
        bits = sign | ((exp - 15 + 127) << 23) | ((frac & 0x3ff) << 13);
      }
    } else bits = sign | ((exp - 15 + 127) << 23) | (frac << 13);
    const view = new DataView(new ArrayBuffer(4));
    view.setUint32(0, bits >>> 0);
    return view.getFloat32(0);
  }

  it('decodes all 65536 F16 bit patterns', () => {
    const bits = new Uint16Array(65536).map((_, i) => i);
    const file = parseSafetensors(Buffer.concat(encodeSafetensors({ h: { dtype: 'F16', shape: [65536], data: bits } })));
    const values = file.float32('h');
    const wide = file.float64('h');
    for (let i = 0; i < 65536; i++) {
      const expected = f16ViaF32Bits(i);
      if (Number.isNaN(expected)) {
        expect(Number.isNaN(values[i]!)).toBe(true);
      } else {
        if (values[i] !== expected || wide[i] !== expected) throw new Error(`F16 0x${i.toString(16)}: got ${values[i]}, expected ${expected}`);
      }
      if (!Number.isNaN(expected) && f16BitsToNumber(i) !== expected) throw new Error(`f16BitsToNumber(0x${i.toString(16)})`);
    }
    expect([values[0x3c00], values[0xc000], values[0x7bff], values[0x0001], values[0x7c00]]).toEqual([1, -2, 65504, 2 ** -24, Infinity]);
  });

  it('decodes BF16 as the upper half of a float32', () => {
    const bits = new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001, 0x4049, 0xbf00]);
    const file = parseSafetensors(Buffer.concat(encodeSafetensors({ b: { dtype: 'BF16', shape: [6], data: bits } })));
    const view = new DataView(new ArrayBuffer(4));
    const expected = [...bits].map((b) => {
      view.setUint32(0, b * 65536);
      return view.getFloat32(0);
    });
    expect([...file.float32('b')]).toEqual(expected);
    expect(expected.slice(0, 3)).toEqual([1, -2, Infinity]);
    expect(expected[4]).toBe(3.140625);
    expect(bf16BitsToNumber(0xbf00)).toBe(-0.5);
  });

  it('converts F64 to float32 with rounding', () => {
    const file = parseSafetensors(Buffer.concat(encodeSafetensors({ d: { dtype: 'F64', shape: [2], data: new Float64Array([0.1, 1e300]) } })));
    expect([...file.float32('d')]).toEqual([Math.fround(0.1), Infinity]);
    expect([...file.float64('d')]).toEqual([0.1, 1e300]);
  });
});

describe('bad safetensors', () => {
  const entry = (dtype: string, shape: number[], offsets: number[]) => ({ dtype, shape, data_offsets: offsets });

  it('rejects a file shorter than the length prefix', () => {
    expectUserError(() => parseSafetensors(new Uint8Array(5), 'model.safetensors'), 'model.safetensors: file is 5 bytes, too short for a safetensors header');
  });

  it('rejects a header length beyond the file before allocating', () => {
    const bytes = rawSafetensors('{}', new Uint8Array(0), 2 ** 40);
    expectUserError(() => parseSafetensors(bytes, 'model.safetensors'), 'model.safetensors: header length 1099511627776 extends beyond the file (10 bytes)');
  });

  it('rejects a header over 100 MB', () => {
    const file = path.join(tempDir(), 'huge.safetensors');
    writeFileSync(file, rawSafetensors('{}', new Uint8Array(0), 150_000_000).subarray(0, 8));
    truncateSync(file, 150_000_010); // sparse: the length fits in the file, but is over the limit
    expectUserError(() => readSafetensors(file), `${file}: header length 150000000 exceeds the 100000000-byte limit`);
  });

  it('rejects invalid JSON and non-object headers', () => {
    expectUserError(() => parseSafetensors(rawSafetensors('{"a":', new Uint8Array(0)), 'm.st'), /^m\.st: header is not valid JSON/);
    expectUserError(() => parseSafetensors(rawSafetensors('[1,2]   ', new Uint8Array(0)), 'm.st'), 'm.st: header is not a JSON object');
  });

  it('rejects offsets beyond the file', () => {
    const bytes = rawSafetensors({ x: entry('F32', [4], [0, 16]) }, new Uint8Array(8));
    expectUserError(() => parseSafetensors(bytes, 'model.safetensors'), `model.safetensors: tensor 'x' data_offsets [0,16] extend beyond the file (${bytes.length} bytes)`);
  });

  it('rejects overlapping tensors', () => {
    const bytes = rawSafetensors({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, new Uint8Array(12));
    expectUserError(() => parseSafetensors(bytes, 'model.safetensors'), "model.safetensors: tensor 'b' data_offsets [4,12] overlap tensor 'a'");
  });

  it('rejects gaps and uncovered trailing data', () => {
    const gap = rawSafetensors({ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [8, 12]) }, new Uint8Array(12));
    expectUserError(() => parseSafetensors(gap, 'm.safetensors'), "m.safetensors: tensor 'b' data_offsets [8,12] leave a gap after byte 4 of the data region");
    const tail = rawSafetensors({ a: entry('F32', [1], [0, 4]) }, new Uint8Array(6));
    expectUserError(() => parseSafetensors(tail, 'm.safetensors'), 'm.safetensors: tensors cover 4 bytes but the data region has 6 bytes');
  });

  it('rejects a shape that disagrees with the byte range', () => {
    const bytes = rawSafetensors({ w: entry('F16', [3], [0, 8]) }, new Uint8Array(8));
    expectUserError(() => parseSafetensors(bytes, 'model.safetensors'), "model.safetensors: tensor 'w' shape [3] of F16 needs 6 bytes but data_offsets [0,8] hold 8");
  });

  it('rejects unsupported dtypes, naming the supported ones', () => {
    const bytes = rawSafetensors({ w: entry('F8_E4M3', [2], [0, 2]) }, new Uint8Array(2));
    expectUserError(() => parseSafetensors(bytes, 'model.safetensors'),
      "model.safetensors: tensor 'w' has unsupported dtype \"F8_E4M3\" (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
  });

  it('rejects malformed shapes, offsets and metadata', () => {
    expectUserError(() => parseSafetensors(rawSafetensors({ w: entry('F32', [-1], [0, 0]) }, new Uint8Array(0)), 'm'), "m: tensor 'w' has invalid shape [-1] (expected an array of non-negative integers)");
    expectUserError(() => parseSafetensors(rawSafetensors({ w: entry('F32', [1], [4, 0]) }, new Uint8Array(4)), 'm'), "m: tensor 'w' data_offsets [4,0] end before they begin");
    expectUserError(() => parseSafetensors(rawSafetensors({ w: { dtype: 'F32', shape: [1] } }, new Uint8Array(4)), 'm'), "m: tensor 'w' has invalid data_offsets undefined (expected [begin, end])");
    expectUserError(() => parseSafetensors(rawSafetensors({ __metadata__: { a: 1 } }, new Uint8Array(0)), 'm'), "m: __metadata__ value 'a' is not a string");
  });

  it('reports a truncated file on disk by name', () => {
    const dir = tempDir();
    const file = path.join(dir, 'model.safetensors');
    writeFileSync(file, readFileSync(SST2).subarray(0, 100_000));
    expectUserError(() => readSafetensors(file), /^\/.*\/model\.safetensors: tensor '[^']+' data_offsets \[\d+,\d+\] extend beyond the file \(100000 bytes\)$/);
  });

  it('names the missing tensor', () => {
    expectUserError(() => readSafetensors(SST2).tensor('nope'), `${SST2}: no tensor named 'nope'`);
  });
});
