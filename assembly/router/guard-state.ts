// The guard records in shared data: one per guarded target, keyed "llm-router:guard:<target>", read
// when a request is routed and changed (under compare-and-swap) when it ends. Whoever's write
// trips or reopens a guard is the one worker that logs it.
import { nowMillis } from "../host/callback-cache";
import { changeRecord, readRecord, RecordChange } from "../host/shared-record";
import { GuardConfig, Target } from "./config";
import { addSample, epochOf, GUARD_FIELDS, isOpenAt, reopen, Sample, SampleOutcome, SampleResult, trippedUntil } from "./guard";
import { TargetHealth } from "./policy";

export function guardKey(target: Target): string {
  return "llm-router:guard:" + target.name;
}

class AddSample extends RecordChange {
  outcome: SampleOutcome = new SampleOutcome();

  constructor(private guard: GuardConfig, private nowMs: i64, private sample: Sample) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    this.outcome = addSample(fields, this.guard, this.nowMs, this.sample);
    return this.outcome.result != SampleResult.Ignored;
  }
}

class Reopen extends RecordChange {
  constructor(private nowMs: i64) {
    super();
  }

  apply(fields: StaticArray<i64>, _exists: bool): bool {
    return reopen(fields, this.nowMs);
  }
}

/** Counts a finished request; the outcome says whether this very write tripped the guard. */
export function recordSample(target: Target, sample: Sample): SampleOutcome {
  const change = new AddSample(target.guard!, nowMillis(), sample);
  if (changeRecord(guardKey(target), GUARD_FIELDS, change) == null) return new SampleOutcome();
  return change.outcome;
}

/**
 * Guard state as a routing decision sees it. Reading also reopens a guard whose cool-down is over;
 * `reopened` tells the caller that its write did, so the message is logged once.
 */
export class SharedHealth extends TargetHealth {
  /** The epoch of the last target asked about, for its sample when the request ends. */
  epoch: i64 = -1;
  reopened: bool = false;

  isOpen(target: Target): bool {
    const now = nowMillis();
    const record = readRecord(guardKey(target), GUARD_FIELDS);
    const fields = record.fields;
    this.epoch = epochOf(fields);
    if (!isOpenAt(fields, now)) return false;
    if (trippedUntil(fields) != 0) this.reopened = changeRecord(guardKey(target), GUARD_FIELDS, new Reopen(now)) != null;
    return true;
  }
}
