import { sharedTickPeriod, StageTicks } from "../mesh/ticks";

const T0: i64 = 1_700_000_000_000;

describe("sharedTickPeriod", () => {
  it("is the shortest need, ignoring stages that need none", () => {
    expect(sharedTickPeriod([0, 250, 0, 50])).toBe(50);
    expect(sharedTickPeriod([250])).toBe(250);
    expect(sharedTickPeriod([0, 0])).toBe(0);
    expect(sharedTickPeriod([])).toBe(0);
  });
});

/** How many of `count` ticks, `shared` ms apart (plus `lateMs` each), go to a stage needing `period`. */
function ticksFor(period: u32, shared: u32, count: i32, lateMs: i64 = 0): i32 {
  const ticks = new StageTicks(1);
  let now = T0;
  let given = 0;
  for (let i = 0; i < count; i++) {
    now += <i64>shared + lateMs;
    if (ticks.due(0, period, shared, now)) given++;
  }
  return given;
}

describe("StageTicks", () => {
  it("gives the stage with the shortest need every tick, even ticks that come late", () => {
    expect(ticksFor(50, 50, 100)).toBe(100);
    expect(ticksFor(50, 50, 100, 3)).toBe(100);
  });

  it("gives a stage with a longer need no more ticks than it asked for, and at most a shared period late", () => {
    // Every 250 ms of 5 s.
    expect(ticksFor(250, 50, 100)).toBe(20);
    // Every 300 ms of 10 s: the first tick at or after 250 ms.
    expect(ticksFor(250, 100, 100)).toBe(34);
  });

  it("gives a stage that needs none no tick", () => {
    expect(ticksFor(0, 50, 10)).toBe(0);
    expect(new StageTicks(1).due(3, 50, 50, T0)).toBe(false);
  });

  it("keeps each stage's own schedule", () => {
    const ticks = new StageTicks(2);
    let first = 0;
    let second = 0;
    for (let i = 1; i <= 20; i++) {
      const now = T0 + <i64>i * 50;
      if (ticks.due(0, 50, 50, now)) first++;
      if (ticks.due(1, 200, 50, now)) second++;
    }
    expect(first).toBe(20);
    expect(second).toBe(5);
  });
});
