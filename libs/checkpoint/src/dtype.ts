import type { DType, TensorData } from '@fisher-merge/core';

export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export const KNOWN_DTYPES = Object.keys(DTYPE_SIZE) as DType[];

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.hasOwn(DTYPE_SIZE, s);
}

export const FLOAT_DTYPES: readonly DType[] = ['F32', 'F16', 'BF16', 'F64'];

/** Views little-endian bytes (copied to an aligned buffer when needed) as the dtype's typed array. */
export function typedArrayFromBytes(dtype: DType, bytes: Uint8Array): TensorData {
  const aligned = bytes.byteOffset % DTYPE_SIZE[dtype] === 0 ? bytes : bytes.slice();
  const { buffer, byteOffset, byteLength } = aligned;
  const n = byteLength / DTYPE_SIZE[dtype];
  switch (dtype) {
    case 'F64': return new Float64Array(buffer, byteOffset, n);
    case 'F32': return new Float32Array(buffer, byteOffset, n);
    case 'F16': case 'BF16': return new Uint16Array(buffer, byteOffset, n);
    case 'I64': return new BigInt64Array(buffer, byteOffset, n);
    case 'I32': return new Int32Array(buffer, byteOffset, n);
    case 'I16': return new Int16Array(buffer, byteOffset, n);
    case 'I8': return new Int8Array(buffer, byteOffset, n);
    case 'U8': case 'BOOL': return new Uint8Array(buffer, byteOffset, n);
  }
}

/** The typed array class a Tensor of this dtype must hold (F16/BF16 as raw bits). */
export const DTYPE_ARRAY: Readonly<Record<DType, abstract new (...args: never[]) => TensorData>> = {
  F64: Float64Array, F32: Float32Array, F16: Uint16Array, BF16: Uint16Array, I64: BigInt64Array,
  I32: Int32Array, I16: Int16Array, I8: Int8Array, U8: Uint8Array, BOOL: Uint8Array,
};

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE 754 binary16 bits -> number (exact). */
export function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** bfloat16 bits -> number: the upper half of a float32. */
export function bf16BitsToNumber(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** Converts any tensor data to float32 (F16/BF16 decoded from their bits); F32 data is returned as is. */
export function toFloat32(dtype: DType, data: TensorData): Float32Array {
  if (dtype === 'F32') return data as Float32Array;
  const out = new Float32Array(data.length);
  fillConverted(dtype, data, out);
  return out;
}

export function toFloat64(dtype: DType, data: TensorData): Float64Array {
  if (dtype === 'F64') return data as Float64Array;
  const out = new Float64Array(data.length);
  fillConverted(dtype, data, out);
  return out;
}

function fillConverted(dtype: DType, data: TensorData, out: Float32Array | Float64Array): void {
  if (dtype === 'F16') {
    const bits = data as Uint16Array;
    for (let i = 0; i < bits.length; i++) out[i] = f16BitsToNumber(bits[i]!);
  } else if (dtype === 'BF16') {
    const bits = data as Uint16Array;
    const u32 = new Uint32Array(bits.length);
    for (let i = 0; i < bits.length; i++) u32[i] = bits[i]! << 16;
    const asF32 = new Float32Array(u32.buffer);
    for (let i = 0; i < bits.length; i++) out[i] = asF32[i]!;
  } else if (dtype === 'I64') {
    const big = data as BigInt64Array;
    for (let i = 0; i < big.length; i++) out[i] = Number(big[i]!);
  } else {
    const src = data as Exclude<TensorData, BigInt64Array>;
    for (let i = 0; i < src.length; i++) out[i] = src[i]!;
  }
}

/** float32 bits -> IEEE 754 binary16 bits, rounded to nearest even (overflow to infinity, NaN stays NaN). */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebiased exponent of binary16
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    // Subnormal: the significand with its implicit bit, shifted to units of 2^-24.
    const full = mant | 0x800000;
    const shift = 14 - e;
    const h = full >>> shift;
    const rest = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    return sign | (rest > half || (rest === half && (h & 1)) ? h + 1 : h);
  }
  const h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the significand steps into the exponent, which is the correctly rounded result (up to infinity).
  return sign | (rest > 0x1000 || (rest === 0x1000 && (h & 1)) ? h + 1 : h);
}

/** float32 bits -> bfloat16 bits, rounded to nearest even (NaN stays NaN). */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Float dtypes a merged checkpoint can be written in. */
export type OutputDType = 'F32' | 'F16' | 'BF16';

/** config.json's `torch_dtype` of each output dtype. */
export const TORCH_DTYPE: Readonly<Record<OutputDType, string>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** Output dtypes by the name config.json's `torch_dtype` gives them (float32, float16, bfloat16). */
export const OUTPUT_DTYPES: ReadonlyMap<string, OutputDType> = new Map(Object.entries(TORCH_DTYPE).map(([dtype, name]) => [name, dtype as OutputDType]));

/** Encodes float32 values in an output dtype (F16/BF16 as their bits, rounded to nearest even). */
export function fromFloat32(dtype: OutputDType, values: Float32Array): TensorData {
  if (dtype === 'F32') return values;
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  const encode = dtype === 'F16' ? f32BitsToF16Bits : f32BitsToBf16Bits;
  for (let i = 0; i < bits.length; i++) out[i] = encode(bits[i]!);
  return out;
}
