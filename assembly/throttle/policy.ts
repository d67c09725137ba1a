// Throttling decisions as plain functions over one key's record (an array of i64 kept in shared
// data, see store.ts) and the rule's limits. The record holds:
// - a token bucket for requests per second (capacity one second's worth, refilled continuously);
// - sliding windows for tokens per minute, made of BUCKETS buckets of BUCKET_MS: a token counts
//   until its bucket leaves the window, between 60 and 65 s after it was spent, so no 60-second
//   span ever admits more than the budget;
// - requests in flight and requests waiting in a queue, which also keep the record from being
//   handed to another key while a request still has to settle its account. These are held on
//   leases (see "holds" below): shared data outlives a Wasm VM, so a VM that fails must not leave
//   its requests counted for good;
// - for a rule with backend "global", what this Envoy knows of the key's budget in the rate limit
//   service: until when the service said it is over the limit, and the credit of tokens it counted
//   that requests did not use (global-policy.ts).
import { ApiError, rateLimited } from "../llm/api-errors";
import { ApiShape } from "../llm/request";
import { Action, Limits, Rule, ThrottleConfig } from "./config";

export const BUCKET_MS: i64 = 5000;
export const BUCKETS: i32 = 13;
export const WINDOW_MS: i64 = BUCKET_MS * BUCKETS;
/** A record untouched this long with nothing in flight or waiting holds no budget and may be reused. */
export const IDLE_MS: i64 = WINDOW_MS;

/** Holds are counted in lease buckets this long; each worker moves its holds into the newest bucket once it begins. */
export const HOLD_STEP_MS: i64 = 1000;
/** Lease buckets per record: a hold its worker stops renewing counts for HOLD_STEPS - 1 to HOLD_STEPS steps more. */
export const HOLD_STEPS: i32 = 4;
/** The longest a hold outlives the last renewal by its worker: how long a failed VM's requests keep their places. */
export const HOLD_LEASE_MS: i64 = HOLD_STEP_MS * HOLD_STEPS;

export const F_FINGERPRINT: i32 = 0;
export const F_LAST_USED: i32 = 1;
/** The hold epoch (now / HOLD_STEP_MS) of the newest lease bucket. */
export const F_HOLD_EPOCH: i32 = 2;
/** Requests available, in thousandths. */
export const F_REQUEST_CREDIT: i32 = 3;
export const F_REQUEST_AT: i32 = 4;
/** The epoch (now / BUCKET_MS) of the newest bucket. */
export const F_EPOCH: i32 = 5;
export const F_TOTAL: i32 = 6;
export const F_INPUT: i32 = F_TOTAL + BUCKETS;
export const F_OUTPUT: i32 = F_INPUT + BUCKETS;
/** The arrival order of the oldest waiting request that claimed its turn (0: none), and when it last did. */
export const F_HEAD: i32 = F_OUTPUT + BUCKETS;
export const F_HEAD_AT: i32 = F_HEAD + 1;
/** Lease buckets of requests in flight, and of requests waiting in a queue. */
export const F_IN_FLIGHT: i32 = F_HEAD_AT + 1;
export const F_WAITING: i32 = F_IN_FLIGHT + HOLD_STEPS;
/** Until when (host ms) the service's window is over the limit, and the Deny it said so for. */
export const F_OVER_UNTIL: i32 = F_WAITING + HOLD_STEPS;
export const F_OVER_DENY: i32 = F_OVER_UNTIL + 1;
/** Until when the credit below may be spent (the end of the service's window it was counted in). */
export const F_CREDIT_UNTIL: i32 = F_OVER_DENY + 1;
/** Credit per token descriptor: tokens, input tokens, output tokens. */
export const F_CREDIT_TOKENS: i32 = F_CREDIT_UNTIL + 1;
export const F_CREDIT_INPUT: i32 = F_CREDIT_TOKENS + 1;
export const F_CREDIT_OUTPUT: i32 = F_CREDIT_INPUT + 1;
export const FIELDS: i32 = F_CREDIT_OUTPUT + 1;
/**
 * The record layout's version, part of every record's key (store.ts). Bump it with any change to
 * the fields above: during a hot update old and new VMs run side by side, and a shared key would
 * let each misread (and rewrite) the other's records.
 */
export const RECORD_LAYOUT: i32 = 3;

export enum Deny {
  None = 0,
  Requests,
  Tokens,
  InputTokens,
  OutputTokens,
  InFlight,
  /** Earlier requests for this key are waiting; a newcomer queues behind them. */
  Waiting,
  /** The request alone needs more than the budget: waiting will never help. */
  TooLarge,
  /** The key's record stayed contended by other workers. */
  Busy,
  /** The rate limit service did not answer, and the rule's on_service_failure is "deny". */
  Unavailable,
}

export const DENY_NAMES: string[] = ["none", "requests", "tokens", "input_tokens", "output_tokens", "in_flight", "waiting", "too_large", "busy", "service_unavailable"];

export class Reservation {
  constructor(public input: i64 = 0, public output: i64 = 0) {}

  get total(): i64 {
    return this.input + this.output;
  }
}

/** The state of a key as a client sees it in x-ratelimit-* headers; -1 where no limit applies. */
export class Check {
  deny: Deny = Deny.None;
  retryAfterMs: i64 = 0;
  remainingRequests: i64 = -1;
  resetRequestsMs: i64 = 0;
  remainingTokens: i64 = -1;
  resetTokensMs: i64 = 0;

  get ok(): bool {
    return this.deny == Deny.None;
  }
}

export function epochOf(now: i64): i64 {
  return now / BUCKET_MS;
}

/** A fresh record for a key: a full request bucket, empty windows. */
export function initRecord(fields: StaticArray<i64>, fingerprint: i64, limits: Limits, now: i64): void {
  for (let i = 0; i < fields.length; i++) unchecked((fields[i] = 0));
  unchecked((fields[F_FINGERPRINT] = fingerprint));
  unchecked((fields[F_LAST_USED] = now));
  unchecked((fields[F_REQUEST_CREDIT] = limits.requestsPerSecond * 1000));
  unchecked((fields[F_REQUEST_AT] = now));
  unchecked((fields[F_EPOCH] = epochOf(now)));
}

export function isIdle(fields: StaticArray<i64>, now: i64): bool {
  return inFlight(fields, now) <= 0 && waiting(fields, now) <= 0 && now - unchecked(fields[F_LAST_USED]) >= IDLE_MS;
}

/**
 * Brings the record up to `now`: refills the request bucket, drops token buckets that left the
 * window and holds whose lease ran out.
 */
export function refresh(fields: StaticArray<i64>, limits: Limits, now: i64): void {
  refreshHolds(fields, now);
  const rps = limits.requestsPerSecond;
  const elapsed = now - unchecked(fields[F_REQUEST_AT]);
  if (elapsed > 0) {
    const capacity = rps * 1000;
    // Milli-requests gained: rps per second is rps thousandths per millisecond.
    const credit = unchecked(fields[F_REQUEST_CREDIT]) + (elapsed > 1000 ? capacity : elapsed * rps);
    unchecked((fields[F_REQUEST_CREDIT] = credit > capacity ? capacity : credit));
    unchecked((fields[F_REQUEST_AT] = now));
  }
  const epoch = epochOf(now);
  const head = unchecked(fields[F_EPOCH]);
  if (epoch <= head) return;
  const steps = epoch - head >= <i64>BUCKETS ? <i64>BUCKETS : epoch - head;
  for (let e = epoch - steps + 1; e <= epoch; e++) {
    const slot = <i32>(e % BUCKETS);
    unchecked((fields[F_TOTAL + slot] = 0));
    unchecked((fields[F_INPUT + slot] = 0));
    unchecked((fields[F_OUTPUT + slot] = 0));
  }
  unchecked((fields[F_EPOCH] = epoch));
}

export function windowUsed(fields: StaticArray<i64>, base: i32): i64 {
  let sum: i64 = 0;
  for (let i = 0; i < BUCKETS; i++) sum += unchecked(fields[base + i]);
  return sum;
}

/**
 * Milliseconds until the window at `base` has room for `need` more under `limit`: buckets leave
 * the window oldest first, bucket e at (e + BUCKETS) * BUCKET_MS.
 */
function windowWaitMs(fields: StaticArray<i64>, base: i32, limit: i64, need: i64, now: i64): i64 {
  const epoch = unchecked(fields[F_EPOCH]);
  let used = windowUsed(fields, base);
  if (used + need <= limit) return 0;
  for (let e = epoch - BUCKETS + 1; e <= epoch; e++) {
    used -= unchecked(fields[base + <i32>(e % BUCKETS)]);
    if (used + need <= limit) return max<i64>(0, (e + BUCKETS) * BUCKET_MS - now);
  }
  return max<i64>(0, (epoch + BUCKETS) * BUCKET_MS - now);
}

/** Milliseconds until everything spent in the window has left it. */
function windowResetMs(fields: StaticArray<i64>, base: i32, now: i64): i64 {
  const epoch = unchecked(fields[F_EPOCH]);
  for (let e = epoch; e > epoch - BUCKETS; e--) {
    if (unchecked(fields[base + <i32>(e % BUCKETS)]) != 0) return max<i64>(0, (e + BUCKETS) * BUCKET_MS - now);
  }
  return 0;
}

function checkWindow(check: Check, deny: Deny, fields: StaticArray<i64>, base: i32, limit: i64, need: i64, now: i64): void {
  if (limit <= 0) return;
  if (need > limit) {
    check.deny = Deny.TooLarge;
    return;
  }
  const used = windowUsed(fields, base);
  if (used + need <= limit) return;
  const wait = windowWaitMs(fields, base, limit, need, now);
  if (check.deny == Deny.None || wait > check.retryAfterMs) {
    check.deny = deny;
    check.retryAfterMs = wait;
  }
}

/**
 * Whether a request with this reservation fits now. The record must be refreshed to `now`.
 * `queueAware`: deny with Waiting while earlier requests for the key wait in a queue.
 */
export function evaluate(fields: StaticArray<i64>, limits: Limits, reservation: Reservation, now: i64, queueAware: bool): Check {
  const check = new Check();
  checkWindow(check, Deny.Tokens, fields, F_TOTAL, limits.tokensPerMinute, reservation.total, now);
  if (check.deny != Deny.TooLarge) checkWindow(check, Deny.InputTokens, fields, F_INPUT, limits.inputTokensPerMinute, reservation.input, now);
  if (check.deny != Deny.TooLarge) checkWindow(check, Deny.OutputTokens, fields, F_OUTPUT, limits.outputTokensPerMinute, reservation.output, now);
  if (check.deny == Deny.TooLarge) {
    check.retryAfterMs = 0;
  } else {
    const rps = limits.requestsPerSecond;
    if (rps > 0 && unchecked(fields[F_REQUEST_CREDIT]) < 1000) {
      const wait = (1000 - unchecked(fields[F_REQUEST_CREDIT]) + rps - 1) / rps;
      if (check.deny == Deny.None || wait > check.retryAfterMs) {
        check.deny = Deny.Requests;
        check.retryAfterMs = wait;
      }
    }
    if (limits.maxInFlight > 0 && inFlight(fields, now) >= limits.maxInFlight && check.deny == Deny.None) {
      // Nothing says when a request in flight ends; a second is a fair guess for a retry.
      check.deny = Deny.InFlight;
      check.retryAfterMs = 1000;
    }
    if (queueAware && waiting(fields, now) > 0 && check.deny == Deny.None) check.deny = Deny.Waiting;
  }
  describe(check, fields, limits, check.ok ? reservation : new Reservation(), now);
  return check;
}

/** Fills what the x-ratelimit-* headers show, as if `reservation` were already taken. */
function describe(check: Check, fields: StaticArray<i64>, limits: Limits, reservation: Reservation, now: i64): void {
  const rps = limits.requestsPerSecond;
  if (rps > 0) {
    const credit = unchecked(fields[F_REQUEST_CREDIT]) - (check.ok ? 1000 : 0);
    check.remainingRequests = max<i64>(0, credit / 1000);
    check.resetRequestsMs = max<i64>(0, (rps * 1000 - max<i64>(credit, 0) + rps - 1) / rps);
  }
  if (limits.tokensPerMinute > 0) {
    check.remainingTokens = max<i64>(0, limits.tokensPerMinute - windowUsed(fields, F_TOTAL) - reservation.total);
    check.resetTokensMs = windowResetMs(fields, F_TOTAL, now);
    if (check.resetTokensMs == 0 && reservation.total > 0) check.resetTokensMs = WINDOW_MS;
  }
}

// ---- first come, first served across workers ----
// Each worker keeps its own waiting requests in arrival order, but two workers can hold requests
// for one key. The oldest of them holds the key's turn: a waiting request first claims it (when
// none is held, when it is older than the holder, or when the holder stopped renewing it), and is
// admitted only on a later try while it still holds it, so that an older request on another
// worker has had one tick to claim it first.

export enum Turn {
  Mine = 0,
  Claimed,
  Other,
}

/** A waiting request's order: its arrival time, with low bits from its stream to tell apart ties. */
export function waitOrder(now: i64, contextId: u32): i64 {
  return (now << 12) | <i64>(contextId & 0xfff);
}

export function takeTurn(fields: StaticArray<i64>, order: i64, now: i64, staleMs: i64): Turn {
  const head = unchecked(fields[F_HEAD]);
  if (head == order) {
    unchecked((fields[F_HEAD_AT] = now));
    return Turn.Mine;
  }
  if (head == 0 || order < head || now - unchecked(fields[F_HEAD_AT]) > staleMs) {
    unchecked((fields[F_HEAD] = order));
    unchecked((fields[F_HEAD_AT] = now));
    return Turn.Claimed;
  }
  return Turn.Other;
}

/** The request holding the turn was admitted or left: the next oldest claims it. */
export function endTurn(fields: StaticArray<i64>, order: i64): void {
  if (unchecked(fields[F_HEAD]) == order) unchecked((fields[F_HEAD] = 0));
}

/**
 * Takes an admitted request's share: one request, one slot in flight (in the newest lease bucket,
 * where renewHold has put its worker's other holds), its tokens in the current bucket.
 */
export function take(fields: StaticArray<i64>, limits: Limits, reservation: Reservation, now: i64): void {
  // Never below empty: a global rule's record counts its traffic without refusing on it (config.ts localLimits).
  if (limits.requestsPerSecond > 0) unchecked((fields[F_REQUEST_CREDIT] = max<i64>(0, fields[F_REQUEST_CREDIT] - 1000)));
  addHeld(fields, F_IN_FLIGHT, 1);
  unchecked((fields[F_LAST_USED] = now));
  const slot = <i32>(epochOf(now) % BUCKETS);
  unchecked((fields[F_TOTAL + slot] = fields[F_TOTAL + slot] + reservation.total));
  unchecked((fields[F_INPUT + slot] = fields[F_INPUT + slot] + reservation.input));
  unchecked((fields[F_OUTPUT + slot] = fields[F_OUTPUT + slot] + reservation.output));
}

function adjust(fields: StaticArray<i64>, base: i32, epoch: i64, delta: i64): void {
  if (delta == 0) return;
  const head = unchecked(fields[F_EPOCH]);
  let slot: i32;
  if (epoch > head - BUCKETS && epoch <= head) {
    slot = <i32>(epoch % BUCKETS);
  } else if (delta > 0) {
    // The reservation's bucket has left the window; tokens charged late still count from now.
    slot = <i32>(head % BUCKETS);
  } else {
    return;
  }
  const value = unchecked(fields[base + slot]) + delta;
  unchecked((fields[base + slot] = value > 0 ? value : 0));
}

/**
 * Settles a request taken at `epoch`: frees its slot in flight and replaces what it reserved by
 * what it used. The record must be refreshed to `now`, and its worker's holds renewed (renewHold)
 * so that the slot is freed from the lease bucket that counts it.
 */
export function settle(fields: StaticArray<i64>, epoch: i64, reserved: Reservation, used: Reservation, now: i64): void {
  addHeld(fields, F_IN_FLIGHT, -1);
  unchecked((fields[F_LAST_USED] = now));
  adjust(fields, F_TOTAL, epoch, used.total - reserved.total);
  adjust(fields, F_INPUT, epoch, used.input - reserved.input);
  adjust(fields, F_OUTPUT, epoch, used.output - reserved.output);
}

/** Undoes take() for a request that another rule then refused: as if it had never been admitted. */
export function untake(fields: StaticArray<i64>, limits: Limits, epoch: i64, reserved: Reservation, now: i64): void {
  if (limits.requestsPerSecond > 0) {
    const credit = unchecked(fields[F_REQUEST_CREDIT]) + 1000;
    const capacity = limits.requestsPerSecond * 1000;
    unchecked((fields[F_REQUEST_CREDIT] = credit > capacity ? capacity : credit));
  }
  settle(fields, epoch, reserved, new Reservation(), now);
}

// ---- holds: requests in flight and waiting, on leases ----
// A request holds its place in flight (or in a queue) in a record that every worker shares and that
// outlives the Wasm VM, so a VM that fails would keep its requests' places for good. Places are
// therefore counted in lease buckets: a ring of HOLD_STEPS buckets of HOLD_STEP_MS. Each worker
// keeps all its holds in one record in a single bucket and moves them to the newest one from its
// tick (renewHold), and with every other change it makes to the record. A bucket leaving the
// ring takes the holds nobody renewed with it: those of a VM that failed (or of a worker stalled
// for seconds, which counts them again on its next renewal).

/** One worker's requests in one record: how many are in flight and waiting, and the bucket that counts them. */
export class Hold {
  inFlight: i64 = 0;
  waiting: i64 = 0;
  /** The hold epoch of that bucket; 0 before the record first counted them. */
  epoch: i64 = 0;

  get empty(): bool {
    return this.inFlight <= 0 && this.waiting <= 0;
  }
}

/**
 * The worker's tick period (0: none). Queues need their tick_ms; without one, holds still need
 * renewing a few times per lease step. Either way a hold is renewed within HOLD_STEP_MS + tick_ms
 * of its last renewal, well before its lease runs out.
 */
export function tickPeriodMs(config: ThrottleConfig): i64 {
  if (config.rules.length == 0) return 0;
  return config.queues ? config.tickMs : HOLD_STEP_MS / 4;
}

export function holdEpochOf(now: i64): i64 {
  return now / HOLD_STEP_MS;
}

/** Drops the holds whose lease ran out: their bucket leaves the ring as the newest epoch advances. */
export function refreshHolds(fields: StaticArray<i64>, now: i64): void {
  const epoch = holdEpochOf(now);
  const head = unchecked(fields[F_HOLD_EPOCH]);
  if (epoch <= head) return;
  // A gap that overflows (no record we wrote has one) clears the whole ring too.
  const gap = epoch - head;
  const steps = gap < 0 || gap >= <i64>HOLD_STEPS ? <i64>HOLD_STEPS : gap;
  for (let e = epoch - steps + 1; e <= epoch; e++) {
    const slot = holdSlot(e);
    unchecked((fields[F_IN_FLIGHT + slot] = 0));
    unchecked((fields[F_WAITING + slot] = 0));
  }
  unchecked((fields[F_HOLD_EPOCH] = epoch));
}

/** The ring position of a hold epoch (unsigned: no record content can index outside the ring). */
function holdSlot(epoch: i64): i32 {
  return <i32>(<u64>epoch % <u64>HOLD_STEPS);
}

/** The holds at `base` whose lease still runs at `now`; the record need not be refreshed. */
function held(fields: StaticArray<i64>, base: i32, now: i64): i64 {
  const head = unchecked(fields[F_HOLD_EPOCH]);
  // The ring counts epochs up to head; refreshing it to now would drop those before `oldest`.
  const oldest = max<i64>(head, holdEpochOf(now)) - HOLD_STEPS + 1;
  let sum: i64 = 0;
  // Counted down from head, so that no record content can make the loop run past the ring.
  for (let k = 0; k < HOLD_STEPS; k++) {
    const e = head - <i64>k;
    if (e < oldest) break;
    sum += unchecked(fields[base + holdSlot(e)]);
  }
  return sum;
}

export function inFlight(fields: StaticArray<i64>, now: i64): i64 {
  return held(fields, F_IN_FLIGHT, now);
}

export function waiting(fields: StaticArray<i64>, now: i64): i64 {
  return held(fields, F_WAITING, now);
}

/** Adds to the newest lease bucket at `base`, never below zero. */
export function addHeld(fields: StaticArray<i64>, base: i32, delta: i64): void {
  const slot = base + holdSlot(unchecked(fields[F_HOLD_EPOCH]));
  const value = unchecked(fields[slot]) + delta;
  unchecked((fields[slot] = value > 0 ? value : 0));
}

/**
 * Renews a worker's holds in the record: moves them into the newest bucket, and returns its epoch
 * (the hold's epoch once the change is written). The record must be refreshed to now. A hold whose
 * bucket already left the ring was dropped although its requests live on: it is counted again.
 */
export function renewHold(fields: StaticArray<i64>, hold: Hold): i64 {
  const head = unchecked(fields[F_HOLD_EPOCH]);
  if (hold.epoch == head) return head;
  if (hold.epoch > head - HOLD_STEPS && hold.epoch < head) {
    const old = holdSlot(hold.epoch);
    unchecked((fields[F_IN_FLIGHT + old] = max<i64>(0, fields[F_IN_FLIGHT + old] - max<i64>(hold.inFlight, 0))));
    unchecked((fields[F_WAITING + old] = max<i64>(0, fields[F_WAITING + old] - max<i64>(hold.waiting, 0))));
  }
  addHeld(fields, F_IN_FLIGHT, max<i64>(hold.inFlight, 0));
  addHeld(fields, F_WAITING, max<i64>(hold.waiting, 0));
  return head;
}

// ---- response headers ----

/** A duration as OpenAI writes its x-ratelimit-reset-* values: "250ms", "1s", "1.5s", "6m0s". */
export function formatDuration(ms: i64): string {
  if (ms < 0) ms = 0;
  if (ms < 1000) return ms.toString() + "ms";
  const minutes = ms / 60000;
  const rest = ms % 60000;
  let seconds = (rest / 1000).toString();
  const millis = rest % 1000;
  if (millis != 0) {
    let fraction = (1000 + millis).toString().slice(1);
    while (fraction.endsWith("0")) fraction = fraction.slice(0, fraction.length - 1);
    seconds += "." + fraction;
  }
  return minutes > 0 ? minutes.toString() + "m" + seconds + "s" : seconds + "s";
}

/** Retry-After is whole seconds; rounding up keeps a client that obeys it from arriving early. */
export function retryAfterSeconds(ms: i64): i64 {
  return ms <= 0 ? 1 : (ms + 999) / 1000;
}

// ---- keys ----

/** The slot a fingerprint tries first, and then the next PROBES - 1 after it. */
export function homeSlot(fingerprint: i64, slots: i32): i32 {
  return <i32>((<u64>fingerprint >> 16) % <u64>slots);
}

// ---- what a request reserves, and what a refusal says ----

/** The prompt estimate plus the most the answer may cost: its max_tokens, else the rule's default. */
export function reservationFor(rule: Rule, shape: ApiShape, promptTokens: i64, maxTokens: i64): Reservation {
  const output = shape == ApiShape.OpenAIEmbeddings ? 0 : maxTokens >= 0 ? maxTokens : rule.defaultOutputTokens;
  return new Reservation(max<i64>(promptTokens, 0), output);
}

function limitFor(rule: Rule, deny: Deny): i64 {
  switch (deny) {
    case Deny.Requests: return rule.limits.requestsPerSecond;
    case Deny.Tokens: return rule.limits.tokensPerMinute;
    case Deny.InputTokens: return rule.limits.inputTokensPerMinute;
    case Deny.OutputTokens: return rule.limits.outputTokensPerMinute;
    case Deny.InFlight: return rule.limits.maxInFlight;
    default: return 0;
  }
}

function retryText(check: Check): string {
  return " Please try again in " + formatDuration(check.retryAfterMs) + ".";
}

/** The 429 message, worded like OpenAI's so people and SDK logs read it the same way. */
export function refusalMessage(rule: Rule, check: Check, reservation: Reservation): string {
  const where = " (llm-throttle rule `" + rule.name + "`)";
  const limit = limitFor(rule, check.deny).toString();
  switch (check.deny) {
    case Deny.Requests:
      return "Rate limit reached for requests" + where + ": limit " + limit + " per second." + retryText(check);
    case Deny.Tokens:
      return "Rate limit reached for tokens per minute" + where + ": limit " + limit + ", requested " + reservation.total.toString() + "." + retryText(check);
    case Deny.InputTokens:
      return "Rate limit reached for input tokens per minute" + where + ": limit " + limit + ", requested " + reservation.input.toString() + "." + retryText(check);
    case Deny.OutputTokens:
      return "Rate limit reached for output tokens per minute" + where + ": limit " + limit + ", requested " + reservation.output.toString() + "." + retryText(check);
    case Deny.InFlight:
      return "Too many requests in flight" + where + ": limit " + limit + "." + retryText(check);
    case Deny.TooLarge:
      return "Request too large for the token budget" + where + ": it needs " + reservation.total.toString() + " tokens (" +
        reservation.input.toString() + " prompt, " + reservation.output.toString() + " output), more than the per-minute limit allows. Lower max_tokens or the prompt.";
    default:
      return "Rate limiter busy" + where + "." + retryText(check);
  }
}

export function queueFullMessage(rule: Rule, check: Check): string {
  return "Too many requests waiting (llm-throttle rule `" + rule.name + "`): the queue holds " + rule.maxQueueLength.toString() + "." + retryText(check);
}

export function queueTimeoutMessage(rule: Rule, check: Check, waitedMs: i64): string {
  return "Rate limit reached (llm-throttle rule `" + rule.name + "`): no room under its limits after waiting " + formatDuration(waitedMs) + "." + retryText(check);
}

// ---- what the throttle does with a request ----

/** One matching rule's part in a request: what it reserves, and the limiter's last answer about it. */
export class RuleAnswer {
  check: Check = new Check();

  constructor(public rule: Rule, public reserved: Reservation) {}
}

export enum Choice {
  /** Every matching rule has room: the request goes on. */
  Admit = 0,
  /** It waits in the rule's queue until the rule has room, or until `deadline`. */
  Queue,
  /** It goes on with the rule's redirect header set, which the route table sends to the fallback model. */
  Redirect,
  /** It is answered here: `error` (429), Retry-After from `retryAfterSeconds`. */
  Reject,
}

export class Decision {
  /** Queue: when the wait ends, in the host's milliseconds. */
  deadline: i64 = 0;
  /** Reject: the answer. */
  error: ApiError | null = null;
  /** Reject: the limiter's answer it reports (x-ratelimit-* headers, Envoy's response details). */
  check: Check | null = null;
  /** Reject: Retry-After, in whole seconds; -1 when no wait can help (the request alone is over the budget). */
  retryAfterSeconds: i64 = -1;

  constructor(public choice: Choice) {}
}

/** Shared: most requests are admitted, and the answer says nothing more. */
const ADMIT = new Decision(Choice.Admit);

/**
 * What to do with a request once the limiter has answered for each rule it matches: `refused` is the
 * first rule without room (null when every one had room). A redirect changes the route, which Envoy
 * picks from the headers: once they went upstream (`headersGone`) the request is refused instead.
 * `queueFull`: the rule's queue turned the request away when it tried to join.
 */
export function decide(refused: RuleAnswer | null, headersGone: bool, queueFull: bool, now: i64): Decision {
  if (refused == null) return ADMIT;
  const rule = refused.rule;
  const check = refused.check;
  // No wait or fallback model makes the service answer; the client hears so, not "rate limited".
  if (check.deny == Deny.Unavailable) return serviceUnavailable(rule, check);
  if (rule.action == Action.Redirect && !headersGone) return new Decision(Choice.Redirect);
  // No wait lets a request larger than the whole budget in.
  if (rule.action == Action.Queue && check.deny != Deny.TooLarge) {
    if (queueFull) return refusal(check, queueFullMessage(rule, check));
    const queued = new Decision(Choice.Queue);
    queued.deadline = now + rule.maxWaitMs;
    return queued;
  }
  return refusal(check, refusalMessage(rule, check, refused.reserved));
}

/** A request that waited `waitedMs` in `rule`'s queue and reached its deadline without room; `check` is the limiter's last answer. */
export function waitedTooLong(rule: Rule, check: Check, waitedMs: i64): Decision {
  return refusal(check, queueTimeoutMessage(rule, check, waitedMs));
}

function serviceUnavailable(rule: Rule, check: Check): Decision {
  const decision = new Decision(Choice.Reject);
  decision.error = new ApiError(503, "rate_limit_service_unavailable", "The rate limit service did not answer (llm-throttle rule `" + rule.name +
    "`, which refuses requests while it cannot count them)." + retryText(check));
  decision.check = check;
  decision.retryAfterSeconds = retryAfterSeconds(check.retryAfterMs);
  return decision;
}

function refusal(check: Check, message: string): Decision {
  const tooLarge = check.deny == Deny.TooLarge;
  const decision = new Decision(Choice.Reject);
  decision.error = rateLimited(tooLarge ? "request_too_large_for_limit" : "rate_limit_exceeded", message);
  decision.check = check;
  decision.retryAfterSeconds = tooLarge ? -1 : retryAfterSeconds(check.retryAfterMs);
  return decision;
}
