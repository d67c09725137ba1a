// Hashing a key made of several strings. It reads UTF-16 units, so unlike stable-hash.ts its values
// are only for use inside one Envoy (shared data, caches), not across builds or proxies.
//
// Pure: no host imports.

import { FNV_OFFSET, FNV_PRIME } from "./stable-hash";

/**
 * A 64-bit FNV-1a hash of a sequence of strings (their UTF-16 units, each string closed by a
 * separator). The throttle stores only this hash of a rate-limit key, never a header's value, so an
 * API key used as a key stays out of shared memory; the metrics filter buckets label sets by it.
 */
export class KeyHash {
  private state: u64 = FNV_OFFSET;

  add(text: string): KeyHash {
    let h = this.state;
    for (let i = 0; i < text.length; i++) {
      const unit = <u64>text.charCodeAt(i);
      h = (h ^ (unit & 0xff)) * FNV_PRIME;
      h = (h ^ (unit >> 8)) * FNV_PRIME;
    }
    // A separator, so that ("ab", "c") and ("a", "bc") differ.
    this.state = (h ^ 0x1f) * FNV_PRIME;
    return this;
  }

  /** Never 0: a zero fingerprint marks a record no key has claimed. */
  fingerprint(): i64 {
    const value = <i64>this.state;
    return value == 0 ? 1 : value;
  }
}
