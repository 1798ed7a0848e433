import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError, type Tensor } from '@fisher-merge/core';
import { bf16BitsToNumber, f16BitsToNumber, openTensorSource, parsePytorchBin, readPytorchBin, unpickle, type PickleHooks } from '@fisher-merge/checkpoint';
import { tempDir } from './helpers.ts';

const FIXTURES = 'test/fixtures/checkpoint';

interface Expected {
  dtype: string;
  shape: number[];
  values: (string | number)[];
}

function caught(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as Error;
  }
  throw new Error('expected a UserError');
}

function tensorValues(t: Tensor): (string | number)[] {
  if (t.dtype === 'F16') return [...(t.data as Uint16Array)].map((b) => String(f16BitsToNumber(b)));
  if (t.dtype === 'BF16') return [...(t.data as Uint16Array)].map((b) => String(bf16BitsToNumber(b)));
  if (t.dtype === 'I64') return [...(t.data as BigInt64Array)].map(String);
  if (t.dtype === 'BOOL') return [...(t.data as Uint8Array)];
  return [...(t.data as Float32Array)].map(String);
}

// Python's repr and JS's String both print the shortest round-tripping decimal; normalise exponents.
const normalise = (v: string | number) => (typeof v === 'string' && /[.e]/.test(v) ? String(Number(v)) : v);

describe('pytorch_model.bin (torch.save zip)', () => {
  for (const fixture of ['mixed', 'module']) {
    const expected = JSON.parse(readFileSync(`${FIXTURES}/${fixture}/expected.json`, 'utf8')) as Record<string, Expected>;
    const file = readPytorchBin(`${FIXTURES}/${fixture}/pytorch_model.bin`);

    it(`lists the ${fixture} state dict in order`, () => {
      expect(file.names()).toEqual(Object.keys(expected));
    });

    for (const [name, want] of Object.entries(expected)) {
      it(`reads ${fixture} '${name}' (${want.dtype} [${want.shape}]) as torch wrote it`, () => {
        const t = file.tensor(name);
        expect(t.dtype).toBe(want.dtype);
        expect(t.shape).toEqual(want.shape);
        expect(file.info(name)).toEqual({ dtype: want.dtype, shape: want.shape });
        expect(tensorValues(t)).toEqual(want.values.map(normalise));
      });
    }
  }

  it('refuses a pickle that references any other global, without running it', () => {
    const e = caught(() => readPytorchBin(`${FIXTURES}/evil.bin`));
    expect(e.message).toBe(`${FIXTURES}/evil.bin: refusing to load global 'posix.system' (only tensors and state dicts are allowed)`);
  });

  it('loads a torch-written BERT checkpoint identically to its safetensors twin', () => {
    const bin = openTensorSource(`${FIXTURES}/bert-bin`);
    const st = openTensorSource(`${FIXTURES}/bert-st`);
    expect([...bin.names()].sort()).toEqual([...st.names()].sort());
    for (const name of st.names()) {
      const a = bin.tensor(name);
      const b = st.tensor(name);
      expect(a.shape).toEqual(b.shape);
      expect(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength))).toBe(true);
    }
  });

  it('rejects files that are not zip archives (legacy torch format)', () => {
    const e = caught(() => parsePytorchBin({ size: 4, read: () => new Uint8Array([0x80, 0x02, 0x8a, 0x0a]) }, 'pytorch_model.bin'));
    expect(e.message).toMatch(/^pytorch_model\.bin: not a zip archive; checkpoints saved by torch < 1\.6/);
  });

  it('rejects compressed entries and truncated archives', () => {
    const bytes = new Uint8Array(readFileSync(`${FIXTURES}/mixed/pytorch_model.bin`));
    // Mark the first central directory entry (data.pkl) as deflated.
    const cd = Buffer.from(bytes).lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), bytes.length);
    const first = Buffer.from(bytes).indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    expect(cd).toBeGreaterThan(0);
    const deflated = bytes.slice();
    new DataView(deflated.buffer).setUint16(first + 10, 8, true);
    const dir = tempDir();
    writeFileSync(path.join(dir, 'pytorch_model.bin'), deflated);
    expect(caught(() => readPytorchBin(path.join(dir, 'pytorch_model.bin'))).message)
      .toBe(`${dir}/pytorch_model.bin: entry 'pytorch_model/data.pkl' is compressed (method 8); only stored entries are supported`);
    writeFileSync(path.join(dir, 'pytorch_model.bin'), bytes.subarray(0, 2000));
    expect(caught(() => readPytorchBin(path.join(dir, 'pytorch_model.bin'))).message).toBe(`${dir}/pytorch_model.bin: not a zip archive (no end of central directory)`);
  });
});

describe('restricted unpickler', () => {
  const hooks: PickleHooks = {
    allowGlobal: (module, name) => module === 'collections' && name === 'OrderedDict',
    call: () => new Map(),
    persistentLoad: () => null,
  };
  const run = (bytes: number[]) => unpickle(new Uint8Array(bytes), 'data.pkl', hooks);
  const str = (s: string) => [...Buffer.from(s, 'latin1')];

  it('builds dicts, lists, tuples and numbers (protocol 2 and 4 opcodes)', () => {
    // {'a': [1, -2, 300], 'b': (None, True, 1.5)} via EMPTY_DICT, MARK, SHORT_BINUNICODE, EMPTY_LIST, APPENDS...
    const bytes = [0x80, 0x04, 0x7d, 0x94, 0x28, 0x8c, 1, ...str('a'), 0x5d, 0x28, 0x4b, 1, 0x4a, 0xfe, 0xff, 0xff, 0xff, 0x4d, 0x2c, 0x01, 0x65,
      0x8c, 1, ...str('b'), 0x4e, 0x88, 0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x87, 0x75, 0x2e];
    const result = run(bytes) as Map<string, unknown>;
    expect([...result.keys()]).toEqual(['a', 'b']);
    expect(result.get('a')).toEqual([1, -2, 300]);
    expect(result.get('b')).toEqual([null, true, 1.5]);
  });

  it('calls an allowed global through the hook only', () => {
    const bytes = [0x80, 0x02, 0x63, ...str('collections\nOrderedDict\n'), 0x29, 0x52, 0x2e];
    expect(run(bytes)).toBeInstanceOf(Map);
    const evil = [0x80, 0x02, 0x63, ...str('builtins\neval\n'), 0x2e];
    expect(caught(() => run(evil)).message).toBe("data.pkl: refusing to load global 'builtins.eval' (only tensors and state dicts are allowed)");
  });

  it('rejects unknown opcodes, truncation and bad memo references', () => {
    expect(caught(() => run([0x80, 0x02, 0x81])).message).toBe('data.pkl: unsupported pickle opcode 0x81 at byte 2');
    expect(caught(() => run([0x80, 0x02, 0x4a, 0x01])).message).toBe('data.pkl: pickle data ends early');
    expect(caught(() => run([0x68, 0x05, 0x2e])).message).toBe('data.pkl: pickle refers to memo 5, which was never stored');
    expect(caught(() => run([0x2e])).message).toBe('data.pkl: pickle stack underflow');
  });
});
