// Where each rule's per-key records live in shared data, so every Envoy worker sees one budget.
// A rule has a fixed number of slots ("llm-throttle:v<layout>:<rule>:<n>"); a key hashes to a home slot and
// may take one of the next PROBES - 1 when that one is held by another key. Records cannot be
// deleted, so a slot whose key went idle is reused by the next key that needs one: tenant churn
// costs no memory beyond rules x slots records.
// Each worker also remembers its holds (requests in flight and waiting) per record, and renews them
// with every change it makes there and from its tick: holds nobody renews expire (policy.ts).
// A global rule's records hold what this Envoy knows of the key in the rate limit service too
// (global-policy.ts): its credit and until when it is over the limit; the circuit that stops
// asking a failing service is a record of its own.
import { changeRecord, readRecord, RecordChange, SharedRecord } from "../host/shared-record";
import { Limits, Rule } from "./config";
import {
  addHeld, Check, Deny, endTurn, epochOf, evaluate, F_FINGERPRINT, F_LAST_USED, F_WAITING, FIELDS, Hold, holdEpochOf, homeSlot,
  initRecord, isIdle, RECORD_LAYOUT, refresh, refreshHolds, renewHold, Reservation, settle, take, takeTurn, Turn, untake, waiting,
} from "./policy";
import {
  addCredit, C_OPEN_UNTIL, circuitClear, CIRCUIT_FIELDS, circuitWaitMs, Credit, gate, Gate, GlobalStep, noteFailure, noteSuccess, planAsk, rememberOverLimit,
} from "./global-policy";

export const KEY_PREFIX = "llm-throttle:v" + RECORD_LAYOUT.toString() + ":";
export const PROBES: i32 = 4;

export class SlotRef {
  constructor(
    public key: string,
    /** All probe slots were held by active keys: this key shares its home slot's budget. */
    public shared: bool,
    /** The record as locate read it, for the change that follows at once; null once used. */
    public lastRead: SharedRecord | null = null,
  ) {}

  /** The read locate made, once: a later change reads afresh. */
  takeLastRead(): SharedRecord | null {
    const read = this.lastRead;
    this.lastRead = null;
    return read;
  }
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
    if (record.exists && unchecked(record.fields[F_FINGERPRINT]) == fingerprint) return new SlotRef(key, false, record);
  }
  for (let p = 0; p < probes; p++) {
    const key = slotKey(rule, (home + p) % slots);
    const claim = new Claim(fingerprint, rule.localLimits, now);
    const written = changeRecord(key, FIELDS, claim);
    if (claim.outcome == CLAIM_MINE || (claim.outcome == CLAIM_TAKEN && written != null)) return new SlotRef(key, false);
  }
  return new SlotRef(slotKey(rule, home), true);
}

/** This worker's holds, by record key: kept while they hold something, renewed from the tick. */
export class Holds {
  private byKey: Map<string, Hold> = new Map();
  /** Every hold was renewed in this hold epoch or later. */
  private renewed: i64 = 0;

  /** The worker's hold in a record (an empty one when it holds nothing there). */
  of(key: string): Hold {
    return this.byKey.has(key) ? this.byKey.get(key) : new Hold();
  }

  /** Remembers a hold after a change, and forgets it once empty: the map stays as small as what is held. */
  keep(key: string, hold: Hold): void {
    if (hold.empty) {
      if (this.byKey.has(key)) this.byKey.delete(key);
    } else if (!this.byKey.has(key)) {
      this.byKey.set(key, hold);
    }
  }

  /** Moves every hold counted in an older lease bucket to the newest one; a contended record is tried again next tick. */
  renew(now: i64): void {
    const epoch = holdEpochOf(now);
    if (this.renewed >= epoch || this.byKey.size == 0) return;
    const keys = this.byKey.keys();
    let all = true;
    for (let i = 0; i < keys.length; i++) {
      const key = unchecked(keys[i]);
      const hold = this.byKey.get(key);
      if (hold.epoch >= epoch) continue;
      const change = new Renew(hold, now);
      if (changeRecord(key, FIELDS, change) != null) hold.epoch = change.head;
      else all = false;
    }
    if (all) this.renewed = epoch;
  }
}

/** A change this worker makes to a record, renewing its holds there on the way. */
abstract class HoldingChange extends RecordChange {
  /** The newest lease bucket's epoch as written: the hold's epoch once the change lands. */
  head: i64 = 0;

  constructor(protected hold: Hold, protected now: i64) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    refreshHolds(fields, this.now);
    this.head = renewHold(fields, this.hold);
    return this.change(fields);
  }

  abstract change(fields: StaticArray<i64>): bool;
}

class Renew extends HoldingChange {
  change(_fields: StaticArray<i64>): bool {
    return true;
  }
}

/** How a request asks: as a newcomer, or as a waiting request (in its key's arrival order). */
export class Asking {
  constructor(
    /** A newcomer queues behind the key's waiting requests instead of overtaking them. */
    public queueAware: bool,
    /** For a waiting request asking for its own queue's key: its waitOrder, else 0. */
    public order: i64 = 0,
    public staleMs: i64 = 0,
    /** A global rule whose service did not answer: its local share applies here instead (on_service_failure "local"). */
    public fallback: bool = false,
  ) {}
}

class Admit extends HoldingChange {
  check: Check = new Check();
  admitted: bool = false;
  /** The slot was handed to another key since it was located. */
  moved: bool = false;
  /** A global rule's step before asking the service (credit taken, what is left to ask); null for a local rule. */
  step: GlobalStep | null = null;

  constructor(hold: Hold, private slot: SlotRef, private fingerprint: i64, private rule: Rule, private reservation: Reservation, now: i64, private asking: Asking) {
    super(hold, now);
  }

  change(fields: StaticArray<i64>): bool {
    this.admitted = false;
    this.step = null;
    if (!this.slot.shared && unchecked(fields[F_FINGERPRINT]) != this.fingerprint) {
      this.moved = true;
      return false;
    }
    const rule = this.rule;
    const counted = rule.localLimits;
    refresh(fields, counted, this.now);
    const order = this.asking.order;
    if (order != 0 && takeTurn(fields, order, this.now, this.asking.staleMs) != Turn.Mine) {
      this.check = new Check();
      this.check.deny = Deny.Waiting;
      return true;
    }
    this.check = evaluate(fields, this.asking.fallback ? counted : rule.enforced, this.reservation, this.now, this.asking.queueAware);
    if (!this.check.ok) return order != 0;
    if (rule.isGlobal && !this.asking.fallback) {
      const step = planAsk(fields, rule, this.reservation, this.now);
      this.step = step;
      if (step.cached != null) {
        this.check = step.cached!;
        return order != 0;
      }
    }
    take(fields, counted, this.reservation, this.now);
    if (order != 0) endTurn(fields, order);
    this.admitted = true;
    return true;
  }
}

export class AdmitResult {
  constructor(public admitted: bool, public check: Check, public slot: SlotRef, public epoch: i64, public step: GlobalStep | null = null) {}
}

/** Admits a request against one rule's record for its key, taking its reservation when it fits. */
export function admit(rule: Rule, fingerprint: i64, slot: SlotRef | null, reservation: Reservation, now: i64, asking: Asking, holds: Holds): AdmitResult {
  let where = slot != null ? slot : locate(rule, fingerprint, now);
  for (let attempt = 0; attempt < 2; attempt++) {
    const hold = holds.of(where.key);
    const change = new Admit(hold, where, fingerprint, rule, reservation, now, asking);
    const written = changeRecord(where.key, FIELDS, change, where.takeLastRead());
    if (written != null) {
      hold.epoch = change.head;
      if (change.admitted) hold.inFlight++;
      holds.keep(where.key, hold);
    }
    if (written != null && change.admitted) return new AdmitResult(true, change.check, where, epochOf(now), change.step);
    if (written != null || !change.moved) {
      // Declined by the limits, or the record stayed contended: either way not admitted now.
      if (change.check.ok) {
        change.check.deny = Deny.Busy;
        change.check.retryAfterMs = 1000;
      }
      return new AdmitResult(false, change.check, where, 0, change.step);
    }
    where = locate(rule, fingerprint, now);
  }
  const busy = new Check();
  busy.deny = Deny.Busy;
  busy.retryAfterMs = 1000;
  return new AdmitResult(false, busy, where, 0);
}

class Settle extends HoldingChange {
  /** Tokens of `credit` the record took. */
  credited: i64 = 0;

  constructor(
    hold: Hold, private limits: Limits, private epoch: i64, private reserved: Reservation, private used: Reservation, now: i64, private undo: bool,
    private credit: Credit | null = null, private overDeny: Deny = Deny.None, private overUntil: i64 = 0,
  ) {
    super(hold, now);
  }

  change(fields: StaticArray<i64>): bool {
    refresh(fields, this.limits, this.now);
    if (this.undo) untake(fields, this.limits, this.epoch, this.reserved, this.now);
    else settle(fields, this.epoch, this.reserved, this.used, this.now);
    const credit = this.credit;
    this.credited = credit != null ? addCredit(fields, credit, this.now) : 0;
    if (this.overUntil > 0) rememberOverLimit(fields, this.overDeny, this.overUntil);
    return true;
  }
}

/**
 * Ends a request of this worker's holds in a record: applies `change` (which frees the request's
 * place), and forgets the request whether or not the change landed. A place the record still
 * counts then stays in the lease bucket it was renewed to last, and expires with it.
 */
function release(key: string, holds: Holds, hold: Hold, change: HoldingChange, inFlight: i64, waiting: i64): bool {
  const written = changeRecord(key, FIELDS, change) != null;
  if (written) hold.epoch = change.head;
  hold.inFlight -= inFlight;
  hold.waiting -= waiting;
  holds.keep(key, hold);
  return written;
}

/**
 * Ends an admitted request: frees its slot in flight and charges what it used instead of its
 * reservation; a global rule's request keeps what the service counted and it did not use as
 * `credit`. Returns the tokens of credit kept.
 */
export function settleRecord(rule: Rule, slot: SlotRef, epoch: i64, reserved: Reservation, used: Reservation, now: i64, holds: Holds, credit: Credit | null = null): i64 {
  const hold = holds.of(slot.key);
  const change = new Settle(hold, rule.localLimits, epoch, reserved, used, now, false, credit);
  return release(slot.key, holds, hold, change, 1, 0) ? change.credited : 0;
}

/**
 * Takes back an admission in full (a later rule refused the same request, the service refused or
 * failed it, the client left while it asked): `credit` is what goes back to the key's credit (what
 * it took, and what the service counted for it), and `overUntil`, when not 0, until when the
 * service said the key is over its limit, for `overDeny`. Returns the tokens of credit kept.
 */
export function undoAdmission(rule: Rule, slot: SlotRef, epoch: i64, reserved: Reservation, now: i64, holds: Holds,
  credit: Credit | null = null, overDeny: Deny = Deny.None, overUntil: i64 = 0): i64 {
  const hold = holds.of(slot.key);
  const change = new Settle(hold, rule.localLimits, epoch, reserved, new Reservation(), now, true, credit, overDeny, overUntil);
  return release(slot.key, holds, hold, change, 1, 0) ? change.credited : 0;
}

class AddCredit extends RecordChange {
  credited: i64 = 0;

  constructor(private slot: SlotRef, private fingerprint: i64, private credit: Credit, private now: i64) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    // A key whose record went to another key since has nothing here to add to.
    if (!this.slot.shared && unchecked(fields[F_FINGERPRINT]) != this.fingerprint) return false;
    this.credited = addCredit(fields, this.credit, this.now);
    return this.credit.until > this.now;
  }
}

/**
 * Adds credit to a key's record outside a settlement: what a request took and gives back without
 * having been counted (on_service_failure "allow"), or what the service counted for a request
 * that had left when the answer came. Returns the tokens added.
 */
export function creditKey(slot: SlotRef, fingerprint: i64, credit: Credit, now: i64): i64 {
  if (credit.empty) return 0;
  const change = new AddCredit(slot, fingerprint, credit, now);
  return changeRecord(slot.key, FIELDS, change) != null ? change.credited : 0;
}

// ---- the circuit of a rate limit service ----

export function circuitKey(cluster: string): string {
  return KEY_PREFIX + "rls:" + cluster;
}

class Probe extends RecordChange {
  gate: Gate = Gate.Ask;

  constructor(private now: i64, private probeMs: i64) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    this.gate = gate(fields, this.now, this.probeMs);
    return this.gate == Gate.Probe;
  }
}

/** Whether a call may go to the service now: while the circuit is closed, a read and no write. */
export function circuitGate(key: string, now: i64, probeMs: i64): Gate {
  const record = readRecord(key, CIRCUIT_FIELDS);
  if (!record.exists || unchecked(record.fields[C_OPEN_UNTIL]) == 0) return Gate.Ask;
  const probe = new Probe(now, probeMs);
  // Another caller's probe written first makes this one's CAS fail and read again: it skips then.
  if (changeRecord(key, CIRCUIT_FIELDS, probe, record) != null) return Gate.Probe;
  return probe.gate == Gate.Probe ? Gate.Skip : probe.gate;
}

class CallOutcome extends RecordChange {
  /** This change opened (failure) or closed (success) the circuit. */
  flipped: bool = false;
  constructor(private success: bool, private now: i64, private threshold: i64, private backoffMs: i64) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    if (this.success) {
      if (circuitClear(fields)) return false;
      this.flipped = noteSuccess(fields);
    } else {
      this.flipped = noteFailure(fields, this.now, this.threshold, this.backoffMs);
    }
    return true;
  }
}

/** While the circuit is open: how long until the next probe may ask; 0 when closed. */
export function circuitWait(key: string, now: i64): i64 {
  const record = readRecord(key, CIRCUIT_FIELDS);
  return record.exists ? circuitWaitMs(record.fields, now) : 0;
}

/** Counts a call's outcome; true when it opened or closed the circuit (whoever flips it says so, once per Envoy). */
export function circuitOutcome(key: string, success: bool, now: i64, threshold: i64, backoffMs: i64): bool {
  if (success) {
    const record = readRecord(key, CIRCUIT_FIELDS);
    if (!record.exists || circuitClear(record.fields)) return false;
  }
  const change = new CallOutcome(success, now, threshold, backoffMs);
  return changeRecord(key, CIRCUIT_FIELDS, change) != null && change.flipped;
}

class Wait extends HoldingChange {
  constructor(hold: Hold, private delta: i64, private maxLength: i64, private order: i64, now: i64) {
    super(hold, now);
  }

  change(fields: StaticArray<i64>): bool {
    if (this.delta > 0 && waiting(fields, this.now) >= this.maxLength) return false;
    addHeld(fields, F_WAITING, this.delta);
    unchecked((fields[F_LAST_USED] = this.now));
    if (this.delta < 0) endTurn(fields, this.order);
    return true;
  }
}

/** Counts a request into the key's queue; false when the queue is full. */
export function joinQueue(rule: Rule, slot: SlotRef, now: i64, holds: Holds): bool {
  const hold = holds.of(slot.key);
  const change = new Wait(hold, 1, rule.maxQueueLength, 0, now);
  if (changeRecord(slot.key, FIELDS, change) == null) return false;
  hold.epoch = change.head;
  hold.waiting++;
  holds.keep(slot.key, hold);
  return true;
}

/** Counts a request out of the key's queue (admitted, timed out or gone), passing on its turn. */
export function leaveQueue(slot: SlotRef, order: i64, now: i64, holds: Holds): void {
  const hold = holds.of(slot.key);
  release(slot.key, holds, hold, new Wait(hold, -1, 0, order, now), 0, 1);
}
