// The protobuf wire format, as much of it as the rate limit service's messages use: varints and
// length-delimited fields written into a buffer sized beforehand, and a reader that never traps. The
// reader checks every length against the bytes left and marks itself failed instead of reading past
// them: the answer comes from the network, and a trap would fail the stream (or the VM).

export const WIRE_VARINT: u32 = 0;
export const WIRE_FIXED64: u32 = 1;
export const WIRE_BYTES: u32 = 2;
export const WIRE_FIXED32: u32 = 5;

export function varintSize(value: u64): i32 {
  let size = 1;
  while (value >= 0x80) {
    value >>= 7;
    size++;
  }
  return size;
}

/** A field's tag and, for a length-delimited field, its length prefix: the bytes before the content. */
export function keySize(field: u32): i32 {
  return varintSize(<u64>(field << 3));
}

/** The whole size of a length-delimited field whose content is `contentSize` bytes. */
export function bytesFieldSize(field: u32, contentSize: i32): i32 {
  return keySize(field) + varintSize(<u64>contentSize) + contentSize;
}

/** The whole size of a varint field; 0 for a value of 0, which proto3 leaves out. */
export function varintFieldSize(field: u32, value: u64): i32 {
  return value == 0 ? 0 : keySize(field) + varintSize(value);
}

/** Writes fields into a buffer of the exact size the *Size functions above computed. */
export class ProtoWriter {
  readonly bytes: Uint8Array;
  private at: usize;
  private readonly end: usize;

  constructor(size: i32) {
    this.bytes = new Uint8Array(size);
    this.at = this.bytes.dataStart;
    this.end = this.at + <usize>size;
  }

  /** True when every byte was written: the sizes computed beforehand matched what was written. */
  get complete(): bool {
    return this.at == this.end;
  }

  varint(value: u64): void {
    // Bounded like every write: a size computed wrong must not write past the buffer.
    while (value >= 0x80) {
      if (this.at >= this.end) return;
      store<u8>(this.at++, <u8>(value | 0x80));
      value >>= 7;
    }
    if (this.at >= this.end) return;
    store<u8>(this.at++, <u8>value);
  }

  key(field: u32, wire: u32): void {
    this.varint(<u64>((field << 3) | wire));
  }

  /** The key and length prefix of a length-delimited field; its content follows. */
  beginBytes(field: u32, contentSize: i32): void {
    this.key(field, WIRE_BYTES);
    this.varint(<u64>contentSize);
  }

  varintField(field: u32, value: u64): void {
    if (value == 0) return;
    this.key(field, WIRE_VARINT);
    this.varint(value);
  }

  /** A string field, its UTF-8 size known (String.UTF8.byteLength) from the sizing pass. */
  stringField(field: u32, text: string, utf8Size: i32): void {
    this.beginBytes(field, utf8Size);
    if (this.at + <usize>utf8Size > this.end) {
      this.at = this.end + 1;
      return;
    }
    this.at += String.UTF8.encodeUnsafe(changetype<usize>(text), text.length, this.at);
  }
}

/**
 * Reads the fields of one message from bytes[start, end). After a malformed field (a varint longer
 * than ten bytes, a length past the end, a group or an unknown wire type) `failed` is set and next()
 * answers false from then on.
 */
export class ProtoReader {
  failed: bool = false;
  field: u32 = 0;
  wire: u32 = 0;

  constructor(private bytes: Uint8Array, private at: i32, private end: i32) {}

  static of(bytes: Uint8Array): ProtoReader {
    return new ProtoReader(bytes, 0, bytes.length);
  }

  /** Moves to the next field: false at the end of the message or once failed. */
  next(): bool {
    if (this.failed || this.at >= this.end) return false;
    const key = this.varint();
    if (this.failed) return false;
    this.field = <u32>(key >> 3);
    this.wire = <u32>(key & 7);
    if (this.field == 0 || key >> 32 != 0) return this.fail();
    if (this.wire != WIRE_VARINT && this.wire != WIRE_FIXED64 && this.wire != WIRE_BYTES && this.wire != WIRE_FIXED32) return this.fail();
    return true;
  }

  varint(): u64 {
    let value: u64 = 0;
    for (let shift: u64 = 0; shift < 70; shift += 7) {
      if (this.at >= this.end) {
        this.fail();
        return 0;
      }
      const b = <u64>unchecked(this.bytes[this.at++]);
      value |= (b & 0x7f) << shift;
      if (b < 0x80) return value;
    }
    this.fail();
    return 0;
  }

  /** The current field's content as a reader of its own, this one moved past it; a failed one when it does not fit. */
  message(): ProtoReader {
    if (this.wire != WIRE_BYTES) return this.failedReader();
    const size = this.varint();
    if (this.failed || size > <u64>(this.end - this.at)) return this.failedReader();
    const start = this.at;
    this.at += <i32>size;
    return new ProtoReader(this.bytes, start, this.at);
  }

  /** The current field's content as UTF-8 text (invalid sequences become U+FFFD); "" when it does not fit. */
  text(): string {
    const content = this.message();
    if (content.failed) return "";
    return String.UTF8.decodeUnsafe(this.bytes.dataStart + <usize>content.at, <usize>(content.end - content.at));
  }

  /** Passes over the current field, whatever its wire type. */
  skip(): void {
    if (this.wire == WIRE_VARINT) this.varint();
    else if (this.wire == WIRE_BYTES) this.message();
    else this.advance(this.wire == WIRE_FIXED64 ? 8 : 4);
  }

  /** A varint where the schema says varint; a field of another wire type marks the message malformed. */
  varintField(): u64 {
    if (this.wire != WIRE_VARINT) {
      this.fail();
      return 0;
    }
    return this.varint();
  }

  private advance(size: i32): void {
    if (this.end - this.at < size) this.fail();
    else this.at += size;
  }

  private fail(): bool {
    this.failed = true;
    return false;
  }

  private failedReader(): ProtoReader {
    this.fail();
    const reader = new ProtoReader(this.bytes, 0, 0);
    reader.failed = true;
    return reader;
  }
}
