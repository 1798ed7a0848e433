import { closeSync, fsync, fsyncSync, mkdirSync, openSync, promises as fs, renameSync, rmSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import path from 'node:path';
import { UserError, numel, tempPath, writeError, writeFileAtomic, type DType, type Tensor } from '@fisher-merge/core';
import { bufferSource, fileSource, type ByteSource } from './bytes.ts';
import { DTYPE_ARRAY, DTYPE_SIZE, KNOWN_DTYPES, isDType, toFloat32, toFloat64, typedArrayFromBytes } from './dtype.ts';

/** Refuse headers larger than this before allocating (the format's reference readers use the same bound). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  dtype: DType;
  shape: number[];
}

interface Entry extends TensorInfo {
  begin: number;
  end: number;
}

/** A parsed safetensors file. Tensors are read on demand, only the bytes each one occupies. */
export class SafetensorsFile {
  private constructor(
    /** The name used in messages (the file's base name). */
    readonly label: string,
    readonly metadata: Record<string, string>,
    private readonly entries: Map<string, Entry>,
    private readonly dataStart: number,
    private readonly source: ByteSource,
  ) {}

  /** @internal */
  static parse(label: string, source: ByteSource): SafetensorsFile {
    const { metadata, entries, dataStart } = parseHeader(label, source);
    return new SafetensorsFile(label, metadata, entries, dataStart, source);
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: [...e.shape] };
  }

  /** The tensor in its stored dtype (F16/BF16 as raw Uint16Array bits). */
  tensor(name: string): Tensor {
    const e = this.entry(name);
    const bytes = this.source.read(this.dataStart + e.begin, e.end - e.begin);
    return { dtype: e.dtype, shape: [...e.shape], data: typedArrayFromBytes(e.dtype, bytes) };
  }

  float32(name: string): Float32Array {
    const t = this.tensor(name);
    return toFloat32(t.dtype, t.data);
  }

  float64(name: string): Float64Array {
    const t = this.tensor(name);
    return toFloat64(t.dtype, t.data);
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new UserError(`${this.label}: no tensor named '${name}'`);
    return e;
  }
}

/** Opens a safetensors file and validates its header; tensor data is read lazily, by exact ranges. */
export function readSafetensors(file: string): SafetensorsFile {
  return SafetensorsFile.parse(file, fileSource(file));
}

/** Parses safetensors bytes already in memory; `label` names the data in messages. */
export function parseSafetensors(bytes: Uint8Array, label = 'safetensors data'): SafetensorsFile {
  return SafetensorsFile.parse(label, bufferSource(bytes));
}

function parseHeader(label: string, source: ByteSource): { metadata: Record<string, string>; entries: Map<string, Entry>; dataStart: number } {
  const fail = (msg: string): never => {
    throw new UserError(`${label}: ${msg}`);
  };
  if (source.size < 8) fail(`file is ${source.size} bytes, too short for a safetensors header`);
  const lenBytes = source.read(0, 8);
  const headerLen = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(source.size - 8)) fail(`header length ${headerLen} extends beyond the file (${source.size} bytes)`);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(headerLen);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(source.read(8, n));
  } catch {
    return fail('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) fail('header is not a JSON object');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('header is not a JSON object');

  const dataStart = 8 + n;
  const dataSize = source.size - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, Entry>();
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ value '${k}' is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    entries.set(name, parseEntry(label, name, value, dataSize, source.size));
  }

  // The data region must be covered exactly: sorted by offset, each tensor starts where the previous ended.
  const sorted = [...entries.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let cursor = 0;
  let previous = '';
  for (const [name, e] of sorted) {
    if (e.begin < cursor) fail(`tensor '${name}' data_offsets [${e.begin},${e.end}] overlap tensor '${previous}'`);
    if (e.begin > cursor) fail(`tensor '${name}' data_offsets [${e.begin},${e.end}] leave a gap after byte ${cursor} of the data region`);
    cursor = e.end;
    previous = name;
  }
  if (cursor !== dataSize) fail(`tensors cover ${cursor} bytes but the data region has ${dataSize} bytes`);
  return { metadata, entries, dataStart };
}

function parseEntry(label: string, name: string, value: unknown, dataSize: number, fileSize: number): Entry {
  const fail = (msg: string): never => {
    throw new UserError(`${label}: tensor '${name}' ${msg}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('is not described by an object');
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (!isDType(dtype)) return fail(`has unsupported dtype ${JSON.stringify(dtype)} (supported: ${KNOWN_DTYPES.join(', ')})`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    return fail(`has invalid shape ${JSON.stringify(shape)} (expected an array of non-negative integers)`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    return fail(`has invalid data_offsets ${JSON.stringify(offsets)} (expected [begin, end])`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(`data_offsets [${begin},${end}] end before they begin`);
  if (end > dataSize) fail(`data_offsets [${begin},${end}] extend beyond the file (${fileSize} bytes)`);
  let bytes = DTYPE_SIZE[dtype];
  for (const d of shape as number[]) {
    bytes *= d;
    if (!Number.isSafeInteger(bytes)) fail(`shape ${JSON.stringify(shape)} is too large`);
  }
  if (bytes !== end - begin) fail(`shape ${JSON.stringify(shape)} of ${dtype} needs ${bytes} bytes but data_offsets [${begin},${end}] hold ${end - begin}`);
  return { dtype, shape: shape as number[], begin, end };
}

// The reference writer orders data by dtype (larger elements first, so each tensor stays aligned), then name.
const WRITE_ORDER: readonly DType[] = ['I64', 'F64', 'F32', 'I32', 'BF16', 'F16', 'I16', 'I8', 'U8', 'BOOL'];

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Names in the order the reference writer lays tensors out: by dtype, then by UTF-8 name. */
export function safetensorsOrder(infos: Readonly<Record<string, TensorInfo>>): string[] {
  return Object.keys(infos).sort((a, b) => WRITE_ORDER.indexOf(infos[a]!.dtype) - WRITE_ORDER.indexOf(infos[b]!.dtype) || compareUtf8(a, b));
}

/** The length prefix and JSON header (padded with spaces to 8 bytes) of tensors laid out in the reference order. */
function encodeHeader(infos: Readonly<Record<string, TensorInfo>>, metadata: Record<string, string>): { order: string[]; bytes: Uint8Array[] } {
  const order = safetensorsOrder(infos);
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const name of order) {
    const { dtype, shape } = infos[name]!;
    if (name === '__metadata__') throw new UserError(`tensor name '__metadata__' is reserved by the safetensors format`);
    if (!isDType(dtype)) throw new Error(`tensor '${name}': unsupported dtype ${String(dtype)}`);
    const size = DTYPE_SIZE[dtype] * numel(shape);
    header[name] = { dtype, shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) json = Buffer.concat([json, Buffer.alloc(padded - json.byteLength, 0x20)]);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  return { order, bytes: [len, json] };
}

/** The tensor's bytes, after checking it is what the header declared. */
function tensorBytes(name: string, t: Tensor, declared: TensorInfo = t): Uint8Array {
  if (!isDType(t.dtype)) throw new Error(`tensor '${name}': unsupported dtype ${String(t.dtype)}`);
  if (t.dtype !== declared.dtype || t.shape.join(',') !== declared.shape.join(',')) {
    throw new Error(`tensor '${name}': declared ${declared.dtype} [${declared.shape}], written ${t.dtype} [${t.shape}]`);
  }
  if (!(t.data instanceof DTYPE_ARRAY[t.dtype])) {
    throw new Error(`tensor '${name}': ${t.dtype} data must be a ${DTYPE_ARRAY[t.dtype].name}, got ${t.data.constructor.name}`);
  }
  if (t.data.length !== numel(t.shape)) throw new Error(`tensor '${name}': shape [${t.shape}] needs ${numel(t.shape)} elements, data has ${t.data.length}`);
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Serialises tensors in the safetensors layout (header padded with spaces to 8 bytes). */
export function encodeSafetensors(tensors: Record<string, Tensor>, metadata: Record<string, string> = { format: 'pt' }): Uint8Array[] {
  const { order, bytes } = encodeHeader(tensors, metadata);
  return [...bytes, ...order.map((name) => tensorBytes(name, tensors[name]!))];
}

/** Writes a safetensors file atomically. Metadata defaults to {"format":"pt"} as the PyTorch writer's. */
export async function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata: Record<string, string> = { format: 'pt' }): Promise<void> {
  await writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

/**
 * Writes a safetensors file one tensor at a time: the header is written first from the declared
 * tensors, then each tensor's bytes as it arrives, so memory holds only the tensor being written.
 * The layout is the reference writer's (the same bytes as `writeSafetensors`); a tensor written
 * before its turn is held until the tensors ahead of it arrive. The file is built under a temporary
 * name and renamed by `close`; `abort` (or any failure) leaves nothing behind.
 */
export class SafetensorsWriter {
  private readonly order: string[];
  private next = 0;
  /** Bytes of tensors written before their turn, checked already. */
  private readonly early = new Map<string, Uint8Array>();
  private fd: number | undefined;

  private constructor(
    readonly file: string,
    private readonly tmp: string,
    private readonly infos: Readonly<Record<string, TensorInfo>>,
    metadata: Record<string, string>,
  ) {
    const { order, bytes } = encodeHeader(infos, metadata);
    this.order = order;
    mkdirSync(path.dirname(file), { recursive: true });
    this.fd = openSync(tmp, 'w');
    try {
      for (const chunk of bytes) this.put(chunk);
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  static create(file: string, infos: Readonly<Record<string, TensorInfo>>, metadata: Record<string, string> = { format: 'pt' }): SafetensorsWriter {
    return new SafetensorsWriter(file, tempPath(file), infos, metadata);
  }

  /** Tensor names in the order their bytes are laid out. */
  get names(): readonly string[] {
    return this.order;
  }

  write(name: string, tensor: Tensor): void {
    const declared = this.infos[name];
    if (!declared) throw new Error(`${path.basename(this.file)}: tensor '${name}' was not declared in the header`);
    const bytes = tensorBytes(name, tensor, declared);
    if (this.order.indexOf(name) < this.next || this.early.has(name)) throw new Error(`${path.basename(this.file)}: tensor '${name}' written twice`);
    this.early.set(name, bytes);
    while (this.next < this.order.length && this.early.has(this.order[this.next]!)) {
      const ready = this.order[this.next]!;
      this.put(this.early.get(ready)!);
      this.early.delete(ready);
      this.next++;
    }
  }

  /** Flushes and renames the file into place; every declared tensor must have been written. */
  close(): void {
    this.checkComplete();
    fsyncSync(this.fd!);
    closeSync(this.fd!);
    this.fd = undefined;
    renameSync(this.tmp, this.file);
  }

  /**
   * `close` with the flush to disk (seconds for a gigabyte) awaited off the event loop: every byte is
   * in the file already, so the tensors written may change meanwhile.
   */
  async closeAsync(): Promise<void> {
    this.checkComplete();
    const fd = this.fd!;
    this.fd = undefined;
    try {
      await promisify(fsync)(fd);
    } catch (e) {
      closeSync(fd);
      await fs.rm(this.tmp, { force: true });
      throw writeError(this.file, e);
    }
    closeSync(fd);
    await fs.rename(this.tmp, this.file);
  }

  private checkComplete(): void {
    if (this.next < this.order.length) {
      const missing = this.order[this.next]!;
      this.abort();
      throw new Error(`${path.basename(this.file)}: closed before tensor '${missing}' was written`);
    }
  }

  /** Removes the partial file. */
  abort(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    rmSync(this.tmp, { force: true });
  }

  private put(bytes: Uint8Array): void {
    try {
      for (let done = 0; done < bytes.byteLength;) done += writeSync(this.fd!, bytes, done, bytes.byteLength - done);
    } catch (e) {
      this.abort();
      throw writeError(this.file, e);
    }
  }
}
