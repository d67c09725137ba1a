// Fixed-size records of i64 fields in proxy-wasm shared data, changed with compare-and-swap so that
// every Envoy worker (each with its own Wasm instance) sees one value. Keys must carry the
// plugin's prefix: Istio gives all plugins in a proxy one shared-data namespace.
import { nowMillis } from "./callback-cache";
import { sharedGet, sharedSet } from "./calls";

export const MAX_CAS_ATTEMPTS: i32 = 32;

/** A change to a record; `apply` edits the fields in place and returns false to leave it as is. */
export abstract class RecordChange {
  abstract apply(fields: StaticArray<i64>, exists: bool): bool;
}

export class SharedRecord {
  constructor(public fields: StaticArray<i64>, public exists: bool, public cas: u32) {}
}

function decode(bytes: ArrayBuffer | null, fieldCount: i32): StaticArray<i64> {
  const fields = new StaticArray<i64>(fieldCount);
  if (bytes == null) return fields;
  const stored = min(fieldCount, bytes.byteLength >> 3);
  const base = changetype<usize>(bytes);
  for (let i = 0; i < stored; i++) unchecked((fields[i] = load<i64>(base + (<usize>i << 3))));
  return fields;
}

function encode(fields: StaticArray<i64>): ArrayBuffer {
  const bytes = new ArrayBuffer(fields.length << 3);
  const base = changetype<usize>(bytes);
  for (let i = 0; i < fields.length; i++) store<i64>(base + (<usize>i << 3), unchecked(fields[i]));
  return bytes;
}

/** The record's current fields (zeros when the key does not exist yet). */
export function readRecord(key: string, fieldCount: i32): SharedRecord {
  const value = sharedGet(key);
  return new SharedRecord(decode(value.bytes, fieldCount), value.bytes != null, value.cas);
}

/**
 * Applies a change atomically: read, apply, write with the read CAS, and start over when another
 * worker wrote in between. Returns the fields as written, or null when the change declined or the
 * key stayed contended for MAX_CAS_ATTEMPTS rounds. `known`, a read the caller has just made (it is
 * changed in place), stands in for the first read: a shared-data read costs a host call, and a
 * stale one only fails the first write.
 */
export function changeRecord(key: string, fieldCount: i32, change: RecordChange, known: SharedRecord | null = null): StaticArray<i64> | null {
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
    const current = attempt == 0 && known != null ? known : readRecord(key, fieldCount);
    if (!current.exists) {
      createRecord(key, fieldCount);
      continue;
    }
    if (!change.apply(current.fields, true)) return null;
    if (sharedSet(key, encode(current.fields), current.cas)) return current.fields;
  }
  return null;
}

// The host has no "set if absent": a write with CAS 0 always lands, so two workers creating the
// same key could overwrite an update made in between. Creation therefore happens under a lock
// (itself a CAS-guarded entry), and only when the key is still absent once the lock is held.
const CREATE_LOCK_KEY = "llm-mesh:create-lock";
const LOCK_STALE_MS: i64 = 100;

function createRecord(key: string, fieldCount: i32): void {
  const locked = acquireCreateLock();
  if (!sharedGet(key).bytes) sharedSet(key, encode(new StaticArray<i64>(fieldCount)), 0);
  if (locked) sharedSet(CREATE_LOCK_KEY, encode(new StaticArray<i64>(1)), 0);
}

function acquireCreateLock(): bool {
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS * 4; attempt++) {
    const lock = sharedGet(CREATE_LOCK_KEY);
    const now = nowMillis();
    const holder = decode(lock.bytes, 1);
    // A holder that trapped never releases; its lock goes stale instead.
    const free = lock.bytes == null || unchecked(holder[0]) == 0 || now - unchecked(holder[0]) > LOCK_STALE_MS;
    if (!free) continue;
    const mine = new StaticArray<i64>(1);
    unchecked((mine[0] = now > 0 ? now : 1));
    if (sharedSet(CREATE_LOCK_KEY, encode(mine), lock.bytes == null ? 0 : lock.cas)) return true;
  }
  return false;
}
