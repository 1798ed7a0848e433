import { UserError } from '@fisher-merge/core';
import type { ByteSource } from './bytes.ts';

export interface ZipEntry {
  name: string;
  size: number;
  method: number;
  localHeaderOffset: number;
}

/**
 * A minimal reader for stored (uncompressed) zip archives, the layout torch.save writes. Only the
 * central directory is read up front; entry data is read by range on demand. Zip64 is understood.
 */
export class ZipReader {
  readonly entries = new Map<string, ZipEntry>();

  constructor(private readonly source: ByteSource, private readonly label: string) {
    const size = source.size;
    const tailLength = Math.min(size, 22 + 0xffff);
    const tail = source.read(size - tailLength, tailLength);
    const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    let eocd = -1;
    for (let i = tailLength - 22; i >= 0; i--) {
      if (view.getUint32(i, true) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) this.fail('not a zip archive (no end of central directory)');
    let count = view.getUint16(eocd + 10, true);
    let cdSize = view.getUint32(eocd + 12, true);
    let cdOffset = view.getUint32(eocd + 16, true);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // Zip64: the locator sits just before the end record and points at the zip64 end record.
      const locatorAt = size - tailLength + eocd - 20;
      if (locatorAt < 0) this.fail('zip64 locator missing');
      const locator = this.view(locatorAt, 20);
      if (locator.getUint32(0, true) !== 0x07064b50) this.fail('zip64 locator missing');
      const recordAt = this.safeNumber(locator.getBigUint64(8, true), 'zip64 end record offset');
      const record = this.view(recordAt, 56);
      if (record.getUint32(0, true) !== 0x06064b50) this.fail('zip64 end record missing');
      count = this.safeNumber(record.getBigUint64(32, true), 'entry count');
      cdSize = this.safeNumber(record.getBigUint64(40, true), 'central directory size');
      cdOffset = this.safeNumber(record.getBigUint64(48, true), 'central directory offset');
    }
    if (cdOffset + cdSize > size) this.fail(`central directory [${cdOffset}, ${cdOffset + cdSize}) extends beyond the file (${size} bytes)`);
    const cd = source.read(cdOffset, cdSize);
    const cdView = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || cdView.getUint32(p, true) !== 0x02014b50) this.fail(`central directory entry ${i} is corrupt`);
      const method = cdView.getUint16(p + 10, true);
      let compressedSize = cdView.getUint32(p + 20, true);
      let size32 = cdView.getUint32(p + 24, true);
      const nameLength = cdView.getUint16(p + 28, true);
      const extraLength = cdView.getUint16(p + 30, true);
      const commentLength = cdView.getUint16(p + 32, true);
      let localHeaderOffset = cdView.getUint32(p + 42, true);
      if (p + 46 + nameLength + extraLength + commentLength > cdSize) this.fail(`central directory entry ${i} is corrupt`);
      const name = new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLength));
      // Zip64 extended information: 64-bit values replace the 32-bit fields that are all ones, in this order.
      let e = p + 46 + nameLength;
      const extraEnd = e + extraLength;
      while (e + 4 <= extraEnd) {
        const id = cdView.getUint16(e, true);
        const len = cdView.getUint16(e + 2, true);
        if (id === 0x0001) {
          let q = e + 4;
          const next = (what: string): number => {
            if (q + 8 > e + 4 + len) this.fail(`entry '${name}' has a short zip64 field`);
            const v = this.safeNumber(cdView.getBigUint64(q, true), what);
            q += 8;
            return v;
          };
          if (size32 === 0xffffffff) size32 = next('size');
          if (compressedSize === 0xffffffff) compressedSize = next('compressed size');
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = next('offset');
        }
        e += 4 + len;
      }
      if (method === 0 && compressedSize !== size32) this.fail(`entry '${name}' is stored but its sizes differ`);
      this.entries.set(name, { name, size: size32, method, localHeaderOffset });
      p += 46 + nameLength + extraLength + commentLength;
    }
  }

  /** The bytes of a stored entry. */
  read(name: string): Uint8Array {
    const entry = this.entries.get(name);
    if (!entry) this.fail(`has no entry '${name}'`);
    const { method, localHeaderOffset, size } = entry!;
    if (method !== 0) this.fail(`entry '${name}' is compressed (method ${method}); only stored entries are supported`);
    const local = this.view(localHeaderOffset, 30);
    if (local.getUint32(0, true) !== 0x04034b50) this.fail(`entry '${name}' has no local header`);
    const start = localHeaderOffset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
    if (start + size > this.source.size) this.fail(`entry '${name}' extends beyond the file (${this.source.size} bytes)`);
    return this.source.read(start, size);
  }

  private view(offset: number, length: number): DataView {
    if (offset < 0 || offset + length > this.source.size) this.fail(`structure at byte ${offset} extends beyond the file (${this.source.size} bytes)`);
    const bytes = this.source.read(offset, length);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private safeNumber(v: bigint, what: string): number {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is too large`);
    return Number(v);
  }

  private fail(msg: string): never {
    throw new UserError(`${this.label}: ${msg}`);
  }
}
