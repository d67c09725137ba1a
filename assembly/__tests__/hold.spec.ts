import { BodyHandOver, bodyWithheld, Held, holdTickPeriodMs, HoldWatch } from "../host/hold-rules";

const T0: i64 = 1_700_000_000_000;

function ids(held: Held<u32>[]): u32[] {
  const out: u32[] = [];
  for (let i = 0; i < held.length; i++) out.push(held[i].stream);
  return out;
}

describe("HoldWatch", () => {
  it("holds and watches while nothing is known", () => {
    const watch = new HoldWatch<u32>(1000);
    expect(watch.holds).toBe(true);
    expect(watch.watching).toBe(true);
    watch.hold(7, T0);
    expect(watch.held.length).toBe(1);
    expect(watch.held[0].deadline).toBe(T0 + 1000);
  });

  it("lets go only the streams past their deadline, oldest first", () => {
    const watch = new HoldWatch<u32>(1000);
    watch.hold(1, T0);
    watch.hold(2, T0 + 10);
    watch.hold(3, T0 + 600);
    expect(watch.expired(T0 + 999).length).toBe(0);
    expect(ids(watch.expired(T0 + 1010))).toStrictEqual([1, 2]);
    expect(ids(watch.held)).toStrictEqual([3]);
    expect(watch.expired(T0 + 1010).length).toBe(0);
    expect(ids(watch.expired(T0 + 1600))).toStrictEqual([3]);
    // Letting go alone concludes nothing.
    expect(watch.watching).toBe(true);
  });

  it("stops watching once a held stream gets its body, and keeps holding", () => {
    const watch = new HoldWatch<u32>(1000);
    watch.hold(1, T0);
    watch.hold(2, T0);
    watch.delivered();
    expect(watch.handOver).toBe(BodyHandOver.Delivered);
    expect(watch.holds).toBe(true);
    expect(watch.watching).toBe(false);
    expect(watch.held.length).toBe(0);
    watch.hold(3, T0);
    expect(watch.held.length).toBe(0);
    expect(watch.expired(T0 + 5000).length).toBe(0);
  });

  it("once the body is known withheld, hands back every held stream and holds no more", () => {
    const watch = new HoldWatch<u32>(1000);
    watch.hold(1, T0);
    watch.hold(2, T0 + 500);
    expect(ids(watch.expired(T0 + 1000))).toStrictEqual([1]);
    expect(ids(watch.withheld())).toStrictEqual([2]);
    expect(watch.handOver).toBe(BodyHandOver.Withheld);
    expect(watch.holds).toBe(false);
    expect(watch.watching).toBe(false);
    watch.hold(3, T0 + 2000);
    expect(watch.held.length).toBe(0);
    // A body that comes later (of a stream let go) changes nothing.
    watch.delivered();
    expect(watch.handOver).toBe(BodyHandOver.Withheld);
  });

  it("forgets a stream that ended before its deadline", () => {
    const watch = new HoldWatch<u32>(1000);
    watch.hold(1, T0);
    watch.hold(2, T0);
    watch.forget(1);
    watch.forget(9);
    expect(ids(watch.expired(T0 + 1000))).toStrictEqual([2]);
  });

  it("gives a changed timeout to streams held after the change", () => {
    const watch = new HoldWatch<u32>(1000);
    watch.hold(1, T0);
    watch.timeoutMs = 100;
    watch.hold(2, T0);
    expect(ids(watch.expired(T0 + 100))).toStrictEqual([2]);
    expect(ids(watch.expired(T0 + 1000))).toStrictEqual([1]);
  });
});

describe("bodyWithheld", () => {
  it("is true when Envoy received body bytes the held filter was not given", () => {
    expect(bodyWithheld(101)).toBe(true);
  });

  it("is false when nothing came: a client slow to send its body", () => {
    expect(bodyWithheld(0)).toBe(false);
  });

  it("takes the timeout alone as the sign when the host gave no figure", () => {
    expect(bodyWithheld(-1)).toBe(true);
  });
});

describe("holdTickPeriodMs", () => {
  it("looks four times per timeout, between 10 ms and a second", () => {
    expect(holdTickPeriodMs(1000)).toBe(250);
    expect(holdTickPeriodMs(10)).toBe(10);
    expect(holdTickPeriodMs(60000)).toBe(1000);
  });
});
