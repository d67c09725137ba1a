// The rollout guard's state, one record per guarded target in shared data so every worker counts
// into the same window and sees the same verdict. The window is a ring of buckets: a sample lands
// in the bucket of its time slot, and the window is the buckets younger than window_ms. These are
// pure functions over the record's fields; guard-state.ts applies them under compare-and-swap.
import { GuardConfig } from "./config";

export const GUARD_BUCKETS: i32 = 10;

/** Bumped on every trip: requests decided before it carry the old value and are not counted after. */
const F_EPOCH: i32 = 0;
/** Until when the target gets no traffic (ms); 0 when open. */
const F_TRIPPED_UNTIL: i32 = 1;
const F_TRIPS: i32 = 2;
const F_FIRST_BUCKET: i32 = 3;
const BUCKET_FIELDS: i32 = 4;
const B_START: i32 = 0;
const B_REQUESTS: i32 = 1;
const B_FAILURES: i32 = 2;
const B_LATENCY_SUM: i32 = 3;

export const GUARD_FIELDS: i32 = F_FIRST_BUCKET + GUARD_BUCKETS * BUCKET_FIELDS;

export function epochOf(fields: StaticArray<i64>): i64 {
  return unchecked(fields[F_EPOCH]);
}

export function trippedUntil(fields: StaticArray<i64>): i64 {
  return unchecked(fields[F_TRIPPED_UNTIL]);
}

export function tripsOf(fields: StaticArray<i64>): i64 {
  return unchecked(fields[F_TRIPS]);
}

export function isOpenAt(fields: StaticArray<i64>, nowMs: i64): bool {
  return trippedUntil(fields) <= nowMs;
}

export class WindowStats {
  requests: i64 = 0;
  failures: i64 = 0;
  latencySum: i64 = 0;

  get errorRate(): f64 {
    return this.requests > 0 ? <f64>this.failures / <f64>this.requests : 0;
  }

  get meanLatencyMs(): i64 {
    return this.requests > 0 ? this.latencySum / this.requests : 0;
  }
}

function bucketWidth(guard: GuardConfig): i64 {
  const width = guard.windowMs / GUARD_BUCKETS;
  return width > 0 ? width : 1;
}

export function windowStats(fields: StaticArray<i64>, guard: GuardConfig, nowMs: i64): WindowStats {
  const stats = new WindowStats();
  const oldest = nowMs - guard.windowMs;
  for (let b = 0; b < GUARD_BUCKETS; b++) {
    const base = F_FIRST_BUCKET + b * BUCKET_FIELDS;
    if (unchecked(fields[base + B_START]) <= oldest) continue;
    stats.requests += unchecked(fields[base + B_REQUESTS]);
    stats.failures += unchecked(fields[base + B_FAILURES]);
    stats.latencySum += unchecked(fields[base + B_LATENCY_SUM]);
  }
  return stats;
}

/** Why the window's numbers trip the guard; "" when they don't. */
export function tripReason(stats: WindowStats, guard: GuardConfig): string {
  if (stats.requests < guard.minRequests) return "";
  if (stats.errorRate > guard.maxErrorRate) {
    return "error rate " + percent(stats.errorRate) + " over " + stats.requests.toString() + " requests is above max_error_rate " + percent(guard.maxErrorRate);
  }
  if (guard.maxMeanLatencyMs > 0 && stats.meanLatencyMs > guard.maxMeanLatencyMs) {
    return "mean latency " + stats.meanLatencyMs.toString() + " ms over " + stats.requests.toString() + " requests is above max_mean_latency_ms " + guard.maxMeanLatencyMs.toString();
  }
  return "";
}

/** A rate as a percentage with at most one decimal: "12.5%", "50%". */
function percent(rate: f64): string {
  const tenths = <i64>Math.round(rate * 1000);
  const whole = (tenths / 10).toString();
  return (tenths % 10 == 0 ? whole : whole + "." + (tenths % 10).toString()) + "%";
}

export enum SampleResult {
  /** Not counted: the target tripped since the request was decided, or is tripped now. */
  Ignored = 0,
  Counted,
  /** Counted, and it tipped the window over a threshold: the guard is now tripped. */
  Tripped,
}

export class Sample {
  constructor(public epoch: i64, public latencyMs: i64, public failed: bool) {}
}

export class SampleOutcome {
  result: SampleResult = SampleResult.Ignored;
  reason: string = "";
}

/** Adds a finished request to the window, tripping the guard when a threshold is passed. */
export function addSample(fields: StaticArray<i64>, guard: GuardConfig, nowMs: i64, sample: Sample): SampleOutcome {
  const outcome = new SampleOutcome();
  if (epochOf(fields) != sample.epoch || !isOpenAt(fields, nowMs)) return outcome;
  const width = bucketWidth(guard);
  const slot = nowMs / width;
  const base = F_FIRST_BUCKET + <i32>(slot % GUARD_BUCKETS) * BUCKET_FIELDS;
  const start = slot * width;
  if (unchecked(fields[base + B_START]) != start) {
    unchecked((fields[base + B_START] = start));
    unchecked((fields[base + B_REQUESTS] = 0));
    unchecked((fields[base + B_FAILURES] = 0));
    unchecked((fields[base + B_LATENCY_SUM] = 0));
  }
  unchecked((fields[base + B_REQUESTS] += 1));
  if (sample.failed) unchecked((fields[base + B_FAILURES] += 1));
  unchecked((fields[base + B_LATENCY_SUM] += max<i64>(sample.latencyMs, 0)));
  outcome.result = SampleResult.Counted;
  const reason = tripReason(windowStats(fields, guard, nowMs), guard);
  if (reason.length == 0) return outcome;
  trip(fields, nowMs + guard.cooldownMs);
  outcome.result = SampleResult.Tripped;
  outcome.reason = reason;
  return outcome;
}

/** Trips until `untilMs` and starts the next try with an empty window. */
function trip(fields: StaticArray<i64>, untilMs: i64): void {
  unchecked((fields[F_EPOCH] += 1));
  unchecked((fields[F_TRIPPED_UNTIL] = untilMs));
  unchecked((fields[F_TRIPS] += 1));
  for (let i = F_FIRST_BUCKET; i < GUARD_FIELDS; i++) unchecked((fields[i] = 0));
}

/** Marks a cooled-down guard open again; false when there is nothing to do (open, or still cooling). */
export function reopen(fields: StaticArray<i64>, nowMs: i64): bool {
  const until = trippedUntil(fields);
  if (until == 0 || until > nowMs) return false;
  unchecked((fields[F_TRIPPED_UNTIL] = 0));
  return true;
}
