// Label values that come from requests (model names, tenants) are untrusted: a client sending a
// new model name per request would otherwise create series without end. Each such label gets a
// fixed number of slots, shared by every Envoy worker through shared data; the first distinct
// values to claim them keep their own series, all later ones are reported as `other`.
//
// A slot holds the value's 64-bit hash (the record layer stores i64 fields): field 0 counts the
// slots taken, fields 1..limit hold the hashes. Slots are never released, so once a worker has
// seen the record full it can answer every later lookup from its own copy.
import { changeRecord, RecordChange } from "../host/shared-record";
import { isLabelSafe, LABEL_OTHER } from "./metric-names";
import { stableHash } from "../text/stable-hash";

export enum SlotResult {
  /** The value already holds a slot. */
  Found = 0,
  /** The value took a free slot. */
  Added,
  /** No slot, and none may be taken (all taken, or adding was not allowed). */
  Absent,
}

/** One attempt at finding or claiming a slot, applied by changeRecord under CAS. */
export class ClaimSlot extends RecordChange {
  result: SlotResult = SlotResult.Absent;
  /** Whether the record had every slot taken when last read: final, slots are never released. */
  sawFull: bool = false;
  /** Whether this claim would take the last free slot (true only once its write lands). */
  takesLast: bool = false;
  /** The hashes held when last read, for a worker to keep once the record is full. */
  held: StaticArray<i64> = new StaticArray<i64>(0);

  constructor(public hash: u64, public limit: i32, public mayAdd: bool) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    let count = <i32>min(max(unchecked(fields[0]), 0), <i64>this.limit);
    count = min(count, fields.length - 1);
    this.held = new StaticArray<i64>(count);
    for (let i = 0; i < count; i++) unchecked((this.held[i] = fields[i + 1]));
    this.sawFull = count >= this.limit;
    this.takesLast = false;
    for (let i = 0; i < count; i++) {
      if (<u64>unchecked(this.held[i]) == this.hash) {
        this.result = SlotResult.Found;
        return false;
      }
    }
    if (!this.mayAdd || this.sawFull) {
      this.result = SlotResult.Absent;
      return false;
    }
    unchecked((fields[count + 1] = <i64>this.hash));
    unchecked((fields[0] = count + 1));
    this.result = SlotResult.Added;
    this.takesLast = count + 1 >= this.limit;
    return true;
  }
}

/**
 * A worker's view of one label's slots. `label()` answers the value to export: the value itself
 * when it holds a slot, else `other`.
 */
export class LabelSlots {
  private known: Set<string> = new Set<string>();
  /**
   * Once the record is seen full its hashes never change; kept here, lookups stay local. A plain
   * scan: only values not known yet are looked up, and a Set<u64> would bring its own code along.
   */
  private final: StaticArray<i64> | null = null;

  constructor(public key: string, public limit: i32) {}

  get isFull(): bool {
    return this.final != null;
  }

  /**
   * `mayAdd`: whether this value may take a free slot now. Callers allow it only for values that
   * proved real (a model that answered), so rejected garbage cannot use up the slots.
   */
  label(value: string, mayAdd: bool): string {
    if (this.known.has(value)) return value;
    if (this.limit <= 0 || !isLabelSafe(value)) return LABEL_OTHER;
    const hash = stableHash(value);
    const final = this.final;
    if (final != null) {
      if (!final.includes(<i64>hash)) return LABEL_OTHER;
      this.known.add(value);
      return value;
    }
    const claim = new ClaimSlot(hash, this.limit, mayAdd);
    const written = changeRecord(this.key, this.limit + 1, claim);
    if (claim.sawFull) this.keepFinal(claim.held, 0);
    else if (written != null && claim.takesLast) this.keepFinal(claim.held, hash);
    // A claim still contended after every CAS round counts as absent: `other` this time, asked again next time.
    if (written != null || claim.result == SlotResult.Found) {
      this.known.add(value);
      return value;
    }
    return LABEL_OTHER;
  }

  private keepFinal(held: StaticArray<i64>, added: u64): void {
    const final = new StaticArray<i64>(held.length + (added != 0 ? 1 : 0));
    for (let i = 0; i < held.length; i++) unchecked((final[i] = held[i]));
    if (added != 0) unchecked((final[held.length] = <i64>added));
    this.final = final;
  }
}
