import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { UserError } from '@fisher-merge/core';

/** Random access to bytes: a file read by exact ranges, or a buffer. */
export interface ByteSource {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
}

export function bufferSource(bytes: Uint8Array): ByteSource {
  return { size: bytes.byteLength, read: (offset, length) => bytes.subarray(offset, offset + length) };
}

/** One readSync call reads at most this many bytes (its length must fit an int32), so larger tensors are read in chunks. */
const MAX_READ_BYTES = 1 << 30;

/** Reads only the requested ranges of a file, opening it per read so no descriptor stays open. */
export function fileSource(file: string): ByteSource {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new UserError(`${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  let size: number;
  try {
    const stat = fstatSync(fd);
    if (stat.isDirectory()) throw new UserError(`${file}: is a directory, expected a file`);
    size = stat.size;
  } finally {
    closeSync(fd);
  }
  return {
    size,
    read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > size) {
        throw new UserError(`${file}: read of ${length} bytes at ${offset} is beyond the file (${size} bytes)`);
      }
      const out = new Uint8Array(length);
      const handle = openSync(file, 'r');
      try {
        let done = 0;
        while (done < length) {
          const n = readSync(handle, out, done, Math.min(length - done, MAX_READ_BYTES), offset + done);
          if (n === 0) throw new UserError(`${file}: file ended early (changed while reading?)`);
          done += n;
        }
      } finally {
        closeSync(handle);
      }
      return out;
    },
  };
}
