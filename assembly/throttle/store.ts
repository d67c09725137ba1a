// Where each rule's per-key records live in shared data, so every Envoy worker sees one budget.
// A rule has a fixed number of slots ("llm-throttle:<rule>:<n>"); a key hashes to a home slot and
// may take one of the next PROBES - 1 when that one is held by another key. Records cannot be
// deleted, so a slot whose key went idle is reused by the next key that needs one: tenant churn
// costs no memory beyond rules x slots records.
import { changeRecord, readRecord, RecordChange } from "../shared/shared-record";
import { Limits, Rule } from "./config";
import {
  Check, Deny, endTurn, epochOf, evaluate, F_FINGERPRINT, F_LAST_USED, F_WAITING, FIELDS, homeSlot, initRecord, isIdle,
  refresh, Reservation, settle, take, takeTurn, Turn, untake,
} from "./policy";

export const KEY_PREFIX = "llm-throttle:";
export const PROBES: i32 = 4;

export class SlotRef {
  constructor(
    public key: string,
    /** All probe slots were held by active keys: this key shares its home slot's budget. */
    public shared: bool,
  ) {}
}

export function slotKey(rule: Rule, slot: i32): string {
  return KEY_PREFIX + rule.name + ":" + slot.toString();
}

const CLAIM_BUSY: i32 = 0;
const CLAIM_MINE: i32 = 1;
const CLAIM_TAKEN: i32 = 2;

class Claim extends RecordChange {
  outcome: i32 = CLAIM_BUSY;

  constructor(private fingerprint: i64, private limits: Limits, private now: i64) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    const holder = unchecked(fields[F_FINGERPRINT]);
    if (holder == this.fingerprint) {
      this.outcome = CLAIM_MINE;
      return false;
    }
    if (holder != 0 && !isIdle(fields, this.now)) {
      this.outcome = CLAIM_BUSY;
      return false;
    }
    initRecord(fields, this.fingerprint, this.limits, this.now);
    this.outcome = CLAIM_TAKEN;
    return true;
  }
}

/** The slot holding this key's record, claiming a free or idle one when it has none. */
export function locate(rule: Rule, fingerprint: i64, now: i64): SlotRef {
  const slots = rule.keySlots;
  const home = homeSlot(fingerprint, slots);
  const probes = min(PROBES, slots);
  for (let p = 0; p < probes; p++) {
    const key = slotKey(rule, (home + p) % slots);
    const record = readRecord(key, FIELDS);
    if (record.exists && unchecked(record.fields[F_FINGERPRINT]) == fingerprint) return new SlotRef(key, false);
  }
  for (let p = 0; p < probes; p++) {
    const key = slotKey(rule, (home + p) % slots);
    const claim = new Claim(fingerprint, rule.limits, now);
    const written = changeRecord(key, FIELDS, claim);
    if (claim.outcome == CLAIM_MINE || (claim.outcome == CLAIM_TAKEN && written != null)) return new SlotRef(key, false);
  }
  return new SlotRef(slotKey(rule, home), true);
}

/** How a request asks: as a newcomer, or as a waiting request (in its key's arrival order). */
export class Asking {
  constructor(
    /** A newcomer queues behind the key's waiting requests instead of overtaking them. */
    public queueAware: bool,
    /** For a waiting request asking for its own queue's key: its waitOrder, else 0. */
    public order: i64 = 0,
    public staleMs: i64 = 0,
  ) {}
}

class Admit extends RecordChange {
  check: Check = new Check();
  admitted: bool = false;
  /** The slot was handed to another key since it was located. */
  moved: bool = false;

  constructor(private slot: SlotRef, private fingerprint: i64, private limits: Limits, private reservation: Reservation, private now: i64, private asking: Asking) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    this.admitted = false;
    if (!this.slot.shared && unchecked(fields[F_FINGERPRINT]) != this.fingerprint) {
      this.moved = true;
      return false;
    }
    refresh(fields, this.limits, this.now);
    const order = this.asking.order;
    if (order != 0 && takeTurn(fields, order, this.now, this.asking.staleMs) != Turn.Mine) {
      this.check = new Check();
      this.check.deny = Deny.Waiting;
      return true;
    }
    this.check = evaluate(fields, this.limits, this.reservation, this.now, this.asking.queueAware);
    if (!this.check.ok) return order != 0;
    take(fields, this.limits, this.reservation, this.now);
    if (order != 0) endTurn(fields, order);
    this.admitted = true;
    return true;
  }
}

export class AdmitResult {
  constructor(public admitted: bool, public check: Check, public slot: SlotRef, public epoch: i64) {}
}

/** Admits a request against one rule's record for its key, taking its reservation when it fits. */
export function admit(rule: Rule, fingerprint: i64, slot: SlotRef | null, reservation: Reservation, now: i64, asking: Asking): AdmitResult {
  let where = slot != null ? slot : locate(rule, fingerprint, now);
  for (let attempt = 0; attempt < 2; attempt++) {
    const change = new Admit(where, fingerprint, rule.limits, reservation, now, asking);
    const written = changeRecord(where.key, FIELDS, change);
    if (written != null && change.admitted) return new AdmitResult(true, change.check, where, epochOf(now));
    if (written != null || !change.moved) {
      // Declined by the limits, or the record stayed contended: either way not admitted now.
      if (change.check.ok) {
        change.check.deny = Deny.Busy;
        change.check.retryAfterMs = 1000;
      }
      return new AdmitResult(false, change.check, where, 0);
    }
    where = locate(rule, fingerprint, now);
  }
  const busy = new Check();
  busy.deny = Deny.Busy;
  busy.retryAfterMs = 1000;
  return new AdmitResult(false, busy, where, 0);
}

class Settle extends RecordChange {
  constructor(private limits: Limits, private epoch: i64, private reserved: Reservation, private used: Reservation, private now: i64, private undo: bool) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    refresh(fields, this.limits, this.now);
    if (this.undo) untake(fields, this.limits, this.epoch, this.reserved, this.now);
    else settle(fields, this.epoch, this.reserved, this.used, this.now);
    return true;
  }
}

/** Ends an admitted request: frees its slot in flight and charges what it used instead of its reservation. */
export function settleRecord(rule: Rule, slot: SlotRef, epoch: i64, reserved: Reservation, used: Reservation, now: i64): bool {
  return changeRecord(slot.key, FIELDS, new Settle(rule.limits, epoch, reserved, used, now, false)) != null;
}

/** Takes back an admission in full, when a later rule refused the same request. */
export function undoAdmission(rule: Rule, slot: SlotRef, epoch: i64, reserved: Reservation, now: i64): bool {
  return changeRecord(slot.key, FIELDS, new Settle(rule.limits, epoch, reserved, new Reservation(), now, true)) != null;
}

class Wait extends RecordChange {
  constructor(private delta: i64, private maxLength: i64, private order: i64, private now: i64) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    const waiting = unchecked(fields[F_WAITING]);
    if (this.delta > 0 && waiting >= this.maxLength) return false;
    const next = waiting + this.delta;
    unchecked((fields[F_WAITING] = next > 0 ? next : 0));
    unchecked((fields[F_LAST_USED] = this.now));
    if (this.delta < 0) endTurn(fields, this.order);
    return true;
  }
}

/** Counts a request into the key's queue; false when the queue is full. */
export function joinQueue(rule: Rule, slot: SlotRef, now: i64): bool {
  return changeRecord(slot.key, FIELDS, new Wait(1, rule.maxQueueLength, 0, now)) != null;
}

/** Counts a request out of the key's queue (admitted, timed out or gone), passing on its turn. */
export function leaveQueue(slot: SlotRef, order: i64, now: i64): void {
  changeRecord(slot.key, FIELDS, new Wait(-1, 0, order, now));
}
