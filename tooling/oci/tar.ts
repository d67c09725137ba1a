// A minimal ustar writer. Everything that tar tools normally take from the file system
// (mtime, owner, mode) is fixed, so the same file contents always give the same archive bytes.
import { gzipSync } from "node:zlib";

export interface TarEntry {
  name: string;
  data: Buffer;
}

const BLOCK = 512;
const FILE_MODE = 0o644;

function writeString(header: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, "utf8");
  if (bytes.length > length) throw new Error(`tar: "${value}" does not fit in ${length} bytes`);
  bytes.copy(header, offset);
}

/** Octal, zero-padded, NUL-terminated: the form every tar reader accepts. */
function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  const digits = value.toString(8).padStart(length - 1, "0");
  if (digits.length > length - 1) throw new Error(`tar: ${value} does not fit in a ${length}-byte field`);
  writeString(header, offset, length, `${digits}\0`);
}

function header(entry: TarEntry): Buffer {
  // Plain ASCII names up to 100 bytes need neither the prefix field nor PAX records.
  if (!/^[\x21-\x7e]{1,100}$/.test(entry.name) || entry.name.startsWith("/") || entry.name.split("/").includes("..")) {
    throw new Error(`tar: unsupported entry name "${entry.name}"`);
  }
  const h = Buffer.alloc(BLOCK);
  writeString(h, 0, 100, entry.name);
  writeOctal(h, 100, 8, FILE_MODE);
  writeOctal(h, 108, 8, 0); // uid
  writeOctal(h, 116, 8, 0); // gid
  writeOctal(h, 124, 12, entry.data.length);
  writeOctal(h, 136, 12, 0); // mtime: the epoch, so the build time never reaches the digest
  h.fill(0x20, 148, 156); // the checksum is computed over a header whose checksum field is blank
  h.write("0", 156, "latin1"); // regular file
  writeString(h, 257, 6, "ustar\0");
  writeString(h, 263, 2, "00");
  let sum = 0;
  for (const byte of h) sum += byte;
  writeString(h, 148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return h;
}

export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(header(entry), entry.data);
    const pad = (BLOCK - (entry.data.length % BLOCK)) % BLOCK;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(2 * BLOCK)); // end-of-archive marker
  return Buffer.concat(parts);
}

/**
 * Node writes a gzip header with mtime 0, no file name and a fixed OS byte, so the output depends
 * only on the input and zlib's version. Level 9 is pinned so a changed default can't move digests.
 */
export function gzip(bytes: Buffer): Buffer {
  return gzipSync(bytes, { level: 9 });
}
