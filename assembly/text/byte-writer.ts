// Bytes appended into one growing buffer: for output assembled from many pieces (a list of
// thousands of entries is not built string by string) and for input gathered chunk by chunk.

export class ByteWriter {
  private buffer: Uint8Array;
  private size: i32 = 0;

  constructor(capacity: i32) {
    this.buffer = new Uint8Array(max(capacity, 16));
  }

  get length(): i32 {
    return this.size;
  }

  private reserve(extra: i32): void {
    if (this.size + extra <= this.buffer.length) return;
    const grown = new Uint8Array(max(this.buffer.length * 2, this.size + extra));
    grown.set(this.buffer.subarray(0, this.size));
    this.buffer = grown;
  }

  bytes(source: Uint8Array, start: i32, end: i32): void {
    this.reserve(end - start);
    this.buffer.set(source.subarray(start, end), this.size);
    this.size += end - start;
  }

  text(value: string): void {
    const encoded = Uint8Array.wrap(String.UTF8.encode(value));
    this.bytes(encoded, 0, encoded.length);
  }

  append(source: Uint8Array): void {
    this.bytes(source, 0, source.length);
  }

  /** The bytes so far, without a copy: valid until the next append. */
  view(): Uint8Array {
    return this.buffer.subarray(0, this.size);
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.size);
  }
}
