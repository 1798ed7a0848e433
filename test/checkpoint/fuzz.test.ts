import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError } from '@fisher-merge/core';
import { encodeSafetensors, parseSafetensors, readSafetensors, type SafetensorsFile } from '@fisher-merge/checkpoint';
import { rawSafetensors, rng, tempDir } from './helpers.ts';

const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'U16', 'F8_E5M2', 'x'];

function validFile(random: () => number): Uint8Array {
  // A plain Uint8Array with its own buffer: Buffer#slice would alias the pooled bytes.
  return new Uint8Array(Buffer.concat(encodeSafetensors({
    a: { dtype: 'F32', shape: [2, 3], data: new Float32Array(6).map(() => random()) },
    b: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0x7c00, 0xfe00]) },
    c: { dtype: 'I64', shape: [1], data: new BigInt64Array([7n]) },
    d: { dtype: 'BF16', shape: [0, 4], data: new Uint16Array(0) },
  })));
}

/** One mutated safetensors file: byte edits, truncation, a new length prefix, or a rewritten header. */
function mutate(valid: Uint8Array, random: () => number): Uint8Array {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const int = (n: number) => Math.floor(random() * n);
  const headerLength = Number(Buffer.from(valid).readBigUInt64LE(0));
  const header = JSON.parse(Buffer.from(valid.subarray(8, 8 + headerLength)).toString()) as Record<string, Record<string, unknown>>;
  const data = valid.subarray(8 + headerLength);
  switch (int(7)) {
    case 0: { // flip random bytes anywhere
      const out = valid.slice();
      for (let k = 1 + int(4); k > 0; k--) out[int(out.length)] = int(256);
      return out;
    }
    case 1: // truncate
      return valid.slice(0, int(valid.length));
    case 2: { // arbitrary length prefix, including huge values
      const out = valid.slice();
      const view = new DataView(out.buffer);
      view.setBigUint64(0, pick([0n, 1n, BigInt(int(400)), 2n ** 63n, 2n ** 64n - 1n, BigInt(headerLength + int(3) - 1)]), true);
      return out;
    }
    case 3: { // edit one tensor's description
      const name = pick(['a', 'b', 'c', 'd']);
      const e = header[name];
      const field = int(4);
      if (field === 0) e.dtype = pick(DTYPES);
      if (field === 1) e.shape = pick([[], [1], [-1], [2 ** 60], [3, 2], [1.5], ['2'], null, [0], [int(10), int(10)]]);
      if (field === 2) e.data_offsets = pick([[0], [1, 0], [-4, 8], [int(100), int(100)], [0, 2 ** 53], null, ['0', '8'], [0, Infinity]]);
      if (field === 3) (header as Record<string, unknown>)[name] = pick([null, 1, 'x', [], {}]);
      return rawSafetensors(header, data);
    }
    case 4: { // add, duplicate or remove entries, or add metadata
      const k = int(4);
      if (k === 0) delete header[pick(['a', 'b', 'c', 'd'])];
      if (k === 1) header[pick(['e', '__proto__', 'constructor', ''])] = { dtype: 'U8', shape: [int(3)], data_offsets: [data.length, data.length + int(3)] };
      if (k === 2) (header as Record<string, unknown>).__metadata__ = pick([{ x: 'y' }, { x: 1 }, null, [], 'str']);
      if (k === 3) header.b = { ...header.a };
      return rawSafetensors(header, data);
    }
    case 5: { // random garbage header text
      const chars = '{}[]":,0123456789abcdefF32shape_offsets ';
      const text = Array.from({ length: int(60) }, () => pick([...chars])).join('');
      return rawSafetensors(text, data);
    }
    default: { // extra or missing data bytes
      const extra = int(9) - 4;
      return extra >= 0 ? new Uint8Array(Buffer.concat([valid, new Uint8Array(extra)])) : valid.slice(0, valid.length + extra);
    }
  }
}

function readAll(file: SafetensorsFile): void {
  for (const name of file.names()) {
    const info = file.info(name);
    const t = file.tensor(name);
    expect(t.shape).toEqual(info.shape);
    file.float32(name);
  }
}

describe('safetensors fuzz', () => {
  it('loads or throws UserError on 4000 mutated files (seeded)', () => {
    const random = rng(20240611);
    const valid = validFile(random);
    let loaded = 0;
    let rejected = 0;
    for (let i = 0; i < 4000; i++) {
      const bytes = mutate(valid, random);
      try {
        readAll(parseSafetensors(bytes, `case ${i}`));
        loaded++;
      } catch (e) {
        if (!(e instanceof UserError)) throw new Error(`case ${i}: ${String(e)} (bytes ${Buffer.from(bytes).toString('base64')})`);
        rejected++;
      }
    }
    // Both outcomes must occur, or the mutations are not exercising the reader.
    expect(loaded).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(1000);
  });

  it('reads mutated files from disk the same way (300 cases)', () => {
    const random = rng(7);
    const valid = validFile(random);
    const dir = tempDir();
    let rejected = 0;
    for (let i = 0; i < 300; i++) {
      const file = path.join(dir, `case${i}.safetensors`);
      writeFileSync(file, mutate(valid, random));
      try {
        readAll(readSafetensors(file));
      } catch (e) {
        if (!(e instanceof UserError)) throw new Error(`case ${i}: ${String(e)}`);
        expect((e as Error).message.startsWith(`${file}: `)).toBe(true);
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(50);
  });
});
