// The one module's ticks: Envoy ticks a root at one period, and the module's stages each declare
// their own (throttle for its queues and leases, admission while it watches held requests). The root
// asks for the shortest, and each stage is ticked only once its own period has passed: a stage is
// not ticked more often than it asked for because another stage needs a shorter period, and at most
// one shared period later than it asked for.

/** The period to ask the host for: the shortest non-zero need, 0 when no stage needs ticks. */
export function sharedTickPeriod(periods: u32[]): u32 {
  let shortest: u32 = 0;
  for (let i = 0; i < periods.length; i++) {
    const period = unchecked(periods[i]);
    if (period != 0 && (shortest == 0 || period < shortest)) shortest = period;
  }
  return shortest;
}

/** When each stage is next due for a tick, in the host's milliseconds. */
export class StageTicks {
  private next: StaticArray<i64>;

  constructor(stages: i32) {
    this.next = new StaticArray<i64>(stages);
  }

  /**
   * Whether the tick at `now` is for stage `stage`, whose need is `period` (0: none), while the root
   * ticks every `shared` ms. Envoy's ticks come no earlier than `shared` apart; an eighth of it is
   * allowed for the wall clock the host reads time from, so that the stage whose need is the shared
   * period gets every tick.
   */
  due(stage: i32, period: u32, shared: u32, now: i64): bool {
    if (period == 0 || stage < 0 || stage >= this.next.length) return false;
    if (now < unchecked(this.next[stage])) return false;
    unchecked((this.next[stage] = now + <i64>period - <i64>(shared / 8)));
    return true;
  }
}
