import { crc32 } from 'node:zlib';

/** One tensor of a torch.save state dict: a view (offset, shape, stride) into a float32 storage. */
export interface TorchTensor {
  name: string;
  storage: string;
  /** Elements the storage declares (torch writes the storage's true size). */
  numel: number;
  offset: number;
  shape: number[];
  stride: number[];
}

const bytes = (s: string): number[] => [...Buffer.from(s, 'utf8')];
const u32 = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const unicode = (s: string): number[] => [0x58, ...u32(Buffer.byteLength(s)), ...bytes(s)]; // BINUNICODE
const int = (n: number): number[] => [0x4a, ...u32(n | 0)]; // BININT (signed 32-bit)
const global = (module: string, name: string): number[] => [0x63, ...bytes(`${module}\n${name}\n`)]; // GLOBAL
const tuple = (items: number[][]): number[] => [0x28, ...items.flat(), 0x74]; // MARK ... TUPLE

/** data.pkl as torch.save writes a state dict (protocol 2), built opcode by opcode. */
export function stateDictPickle(tensors: readonly TorchTensor[]): Uint8Array {
  const out = [0x80, 0x02, ...global('collections', 'OrderedDict'), 0x29, 0x52, 0x28];
  for (const t of tensors) {
    const storage = [...tuple([unicode('storage'), global('torch', 'FloatStorage'), unicode(t.storage), unicode('cpu'), int(t.numel)]), 0x51]; // BINPERSID
    const args = tuple([storage, int(t.offset), tuple(t.shape.map(int)), tuple(t.stride.map(int)), [0x89], [...global('collections', 'OrderedDict'), 0x29, 0x52]]);
    out.push(...unicode(t.name), ...global('torch._utils', '_rebuild_tensor_v2'), ...args, 0x52);
  }
  out.push(0x75, 0x2e); // SETITEMS, STOP
  return Uint8Array.from(out);
}

/** CRC, compressed and uncompressed size and name length: the same run in a local and a central header, at different offsets. */
function writeEntryFields(header: Buffer, at: number, crc: number, size: number, nameLength: number): void {
  header.writeUInt32LE(crc, at);
  header.writeUInt32LE(size, at + 4);
  header.writeUInt32LE(size, at + 8);
  header.writeUInt16LE(nameLength, at + 12);
}

/** A stored (uncompressed) zip archive of the given entries, as torch.save lays one out. */
export function storedZip(entries: ReadonlyArray<[string, Uint8Array]>): Uint8Array {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBytes = Buffer.from(name, 'utf8');
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    writeEntryFields(local, 14, crc, data.length, nameBytes.length);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    writeEntryFields(cd, 16, crc, data.length, nameBytes.length);
    cd.writeUInt32LE(offset, 42);
    central.push(cd, nameBytes);
    parts.push(local, nameBytes, Buffer.from(data));
    offset += 30 + nameBytes.length + data.length;
  }
  const cdBytes = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cdBytes.length, 12);
  end.writeUInt32LE(offset, 16);
  return new Uint8Array(Buffer.concat([...parts, cdBytes, end]));
}

/** pytorch_model.bin bytes: the state dict's pickle plus one storage entry per key. */
export function torchCheckpoint(tensors: readonly TorchTensor[], storages: Record<string, Float32Array>): Uint8Array {
  return storedZip([
    ['archive/data.pkl', stateDictPickle(tensors)],
    ['archive/byteorder', new Uint8Array(Buffer.from('little'))],
    ...Object.entries(storages).map(([key, values]): [string, Uint8Array] => [`archive/data/${key}`, new Uint8Array(values.buffer, values.byteOffset, values.byteLength)]),
  ]);
}
