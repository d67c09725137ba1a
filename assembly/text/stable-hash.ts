// A stable, fast, non-cryptographic 64-bit hash: FNV-1a over UTF-8 bytes, then the MurmurHash3
// 64-bit finalizer. FNV-1a alone spreads short, similar keys ("user-17", "user-18") badly over its
// low bits and over small ranges; the finalizer makes every input bit reach every output bit, so
// `bucketOf` splits users evenly. The value depends only on the text: the same on every worker,
// every Envoy and across restarts, which is what sticky routing needs.
//
// Pure: no host imports.

export const FNV_OFFSET: u64 = 0xcbf29ce484222325;
export const FNV_PRIME: u64 = 0x100000001b3;

/** MurmurHash3's fmix64: a bijection on 64 bits with full avalanche. */
export function mix64(value: u64): u64 {
  let h = value;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccd;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53;
  h ^= h >> 33;
  return h;
}

/** Incremental hashing, for text that arrives a piece at a time (a streamed answer). */
export class StableHasher {
  private state: u64 = FNV_OFFSET;

  reset(): void {
    this.state = FNV_OFFSET;
  }

  addByte(byte: u8): void {
    this.state = (this.state ^ <u64>byte) * FNV_PRIME;
  }

  /** A Unicode code point, hashed as its UTF-8 bytes; anything out of range counts as U+FFFD. */
  addCodePoint(cp: i32): void {
    let c = cp;
    if (c < 0 || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) c = 0xfffd;
    if (c < 0x80) {
      this.addByte(<u8>c);
    } else if (c < 0x800) {
      this.addByte(<u8>(0xc0 | (c >> 6)));
      this.addByte(<u8>(0x80 | (c & 0x3f)));
    } else if (c < 0x10000) {
      this.addByte(<u8>(0xe0 | (c >> 12)));
      this.addByte(<u8>(0x80 | ((c >> 6) & 0x3f)));
      this.addByte(<u8>(0x80 | (c & 0x3f)));
    } else {
      this.addByte(<u8>(0xf0 | (c >> 18)));
      this.addByte(<u8>(0x80 | ((c >> 12) & 0x3f)));
      this.addByte(<u8>(0x80 | ((c >> 6) & 0x3f)));
      this.addByte(<u8>(0x80 | (c & 0x3f)));
    }
  }

  /** Every code point of a string; unpaired surrogates count as U+FFFD, as UTF-8 encoders do. */
  addString(text: string): void {
    for (let i = 0; i < text.length; i++) {
      let cp = text.charCodeAt(i);
      if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
        const low = text.charCodeAt(i + 1);
        if (low >= 0xdc00 && low <= 0xdfff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          i++;
        }
      }
      this.addCodePoint(cp);
    }
  }

  digest(): u64 {
    return mix64(this.state);
  }
}

const hasher = new StableHasher();

export function stableHash(text: string): u64 {
  hasher.reset();
  hasher.addString(text);
  return hasher.digest();
}

/**
 * A hash mapped onto 0..buckets-1 by its high bits (multiply-shift), which is as even as the hash
 * itself; `hash % buckets` would favour the low buckets slightly.
 */
export function bucketOf(hash: u64, buckets: u32): u32 {
  return <u32>(((hash >> 32) * <u64>buckets) >> 32);
}

const HEX_DIGITS = "0123456789abcdef";

/** The hash as 16 lower-case hex digits. */
export function hex64(hash: u64): string {
  let out = "";
  for (let shift: i32 = 60; shift >= 0; shift -= 4) out += HEX_DIGITS.charAt(<i32>((hash >> <u64>shift) & 15));
  return out;
}
