/** Element types as safetensors names them. */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export type TensorData = Float64Array | Float32Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array;

/** A dense row-major tensor. F16/BF16 data is kept as raw Uint16Array bits. */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function f32(shape: number[], data: Float32Array = new Float32Array(numel(shape))): Tensor {
  return { dtype: 'F32', shape, data };
}

export function f64(shape: number[], data: Float64Array = new Float64Array(numel(shape))): Tensor {
  return { dtype: 'F64', shape, data };
}
