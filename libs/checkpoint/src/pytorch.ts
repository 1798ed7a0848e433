import { UserError, numel, type DType, type Tensor } from '@fisher-merge/core';
import { fileSource, type ByteSource } from './bytes.ts';
import type { TensorFile } from './checkpoint.ts';
import { DTYPE_SIZE, typedArrayFromBytes } from './dtype.ts';
import { isGlobal, unpickle, type PyGlobal } from './pickle.ts';
import type { TensorInfo } from './safetensors.ts';
import { ZipReader } from './zip.ts';

/** torch storage classes (as torch.save pickles them) and their element types. */
const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

interface StorageRef {
  kind: 'storage';
  dtype: DType;
  key: string;
  numel: number;
}

interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

function isContiguous(t: TensorRef): boolean {
  let expected = 1;
  for (let d = t.shape.length - 1; d >= 0; d--) {
    if (t.shape[d] !== 1 && t.stride[d] !== expected) return false;
    expected *= t.shape[d]!;
  }
  return true;
}

function isIntegerList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/**
 * Reads a torch.save checkpoint (a zip holding `<archive>/data.pkl` and `<archive>/data/<key>` storages).
 * The pickle is interpreted by a restricted unpickler that accepts only a dict of tensors; storages
 * are read when a tensor is asked for.
 */
export function readPytorchBin(file: string): TensorFile {
  return parsePytorchBin(fileSource(file), file);
}

export function parsePytorchBin(source: ByteSource, label: string): TensorFile {
  const fail = (msg: string): never => {
    throw new UserError(`${label}: ${msg}`);
  };
  const magic = source.size >= 4 ? source.read(0, 4) : new Uint8Array(0);
  if (!(magic[0] === 0x50 && magic[1] === 0x4b && magic[2] === 0x03 && magic[3] === 0x04)) {
    fail('not a zip archive; checkpoints saved by torch < 1.6 (legacy format) are not supported, re-save them with torch.save or as safetensors');
  }
  const zip = new ZipReader(source, label);
  const pklName = [...zip.entries.keys()].find((n) => n === 'data.pkl' || /^[^/]+\/data\.pkl$/.test(n));
  if (pklName === undefined) return fail('has no data.pkl entry');
  const archive = pklName!.slice(0, pklName!.length - 'data.pkl'.length);
  const byteorder = archive + 'byteorder';
  if (zip.entries.has(byteorder) && new TextDecoder().decode(zip.read(byteorder)).trim() !== 'little') fail('big-endian storages are not supported');

  const result = unpickle(zip.read(pklName!), label, {
    allowGlobal: (module, name) => ALLOWED_GLOBALS.has(`${module}.${name}`),
    persistentLoad(pid) {
      const [kind, storageType, key, , count] = Array.isArray(pid) ? pid : [];
      if (kind !== 'storage' || !isGlobal(storageType) || typeof key !== 'string' || !Number.isSafeInteger(count) || (count as number) < 0) {
        return fail('unsupported persistent id in data.pkl');
      }
      const dtype = STORAGE_DTYPES[(storageType as PyGlobal).name];
      if (!dtype) return fail(`unsupported storage type ${(storageType as PyGlobal).name}`);
      return { kind: 'storage', dtype, key, numel: count as number } satisfies StorageRef;
    },
    call(fn, args) {
      const qualified = `${fn.module}.${fn.name}`;
      if (qualified === 'collections.OrderedDict' && args.length === 0) return new Map();
      if (qualified === 'torch._utils._rebuild_parameter' && args.length >= 1) return args[0];
      if (qualified === 'torch._utils._rebuild_tensor_v2' && args.length >= 4) {
        const [storage, offset, shape, stride] = args;
        const s = storage as StorageRef;
        if (s?.kind !== 'storage' || !Number.isSafeInteger(offset) || !isIntegerList(shape) || !isIntegerList(stride) || shape.length !== stride.length) {
          return fail('malformed tensor in data.pkl');
        }
        if ((offset as number) < 0) return fail(`a tensor in data.pkl has storage offset ${offset as number}, expected an offset >= 0`);
        return { kind: 'tensor', storage: s, offset: offset as number, shape: [...shape], stride: [...stride] } satisfies TensorRef;
      }
      return fail(`unsupported call of '${qualified}' in data.pkl`);
    },
  });

  if (!(result instanceof Map)) return fail('data.pkl does not hold a state dict (a dict of tensors)');
  const tensors = new Map<string, TensorRef>();
  for (const [name, value] of result as Map<unknown, unknown>) {
    const ref = value as TensorRef;
    if (typeof name !== 'string' || ref?.kind !== 'tensor') fail(`state dict entry ${JSON.stringify(name)} is not a tensor`);
    tensors.set(name as string, ref);
  }
  const storages = new Map<string, Uint8Array>();
  const storageBytes = (s: StorageRef): Uint8Array => {
    let bytes = storages.get(s.key);
    if (!bytes) {
      const entry = `${archive}data/${s.key}`;
      if (!zip.entries.has(entry)) fail(`storage '${s.key}' is missing (no entry '${entry}')`);
      bytes = zip.read(entry);
      if (bytes.length < s.numel * DTYPE_SIZE[s.dtype]) fail(`storage '${s.key}' holds ${bytes.length} bytes, fewer than its ${s.numel} ${s.dtype} elements`);
      storages.set(s.key, bytes);
    }
    return bytes;
  };
  const ref = (name: string): TensorRef => tensors.get(name) ?? fail(`no tensor named '${name}'`);

  return {
    label,
    names: () => [...tensors.keys()],
    has: (name) => tensors.has(name),
    info: (name): TensorInfo => ({ dtype: ref(name).storage.dtype, shape: [...ref(name).shape] }),
    tensor(name): Tensor {
      const t = ref(name);
      const { dtype } = t.storage;
      const size = DTYPE_SIZE[dtype];
      const n = numel(t.shape);
      const elements = typedArrayFromBytes(dtype, storageBytes(t.storage).subarray(0, t.storage.numel * size));
      // The furthest element the view touches must lie inside the storage.
      let last = t.offset;
      for (let i = 0; i < t.shape.length; i++) last += (t.shape[i]! - 1) * t.stride[i]!;
      if (n > 0 && last >= t.storage.numel) fail(`tensor '${name}' reaches element ${last} of storage '${t.storage.key}', which has ${t.storage.numel}`);
      if (n > t.storage.numel) fail(`tensor '${name}' has ${n} elements, more than its storage '${t.storage.key}' (${t.storage.numel})`);
      if (isContiguous(t)) return { dtype, shape: [...t.shape], data: elements.slice(t.offset, t.offset + n) };
      const out = typedArrayFromBytes(dtype, new Uint8Array(n * size));
      const index = new Array<number>(t.shape.length).fill(0);
      for (let i = 0; i < n; i++) {
        let at = t.offset;
        for (let d = 0; d < index.length; d++) at += index[d]! * t.stride[d]!;
        (out as unknown as unknown[])[i] = (elements as unknown as unknown[])[at];
        for (let d = index.length - 1; d >= 0; d--) {
          if (++index[d]! < t.shape[d]!) break;
          index[d] = 0;
        }
      }
      return { dtype, shape: [...t.shape], data: out };
    },
  };
}
