import { METRIC_FLUSH_MS, MetricBatch } from "../host/metric-batch";

const T0: i64 = 1_700_000_000_000;

// What a flush handed over, in order: the sink is a plain function, so it records into these.
const sentIds: u32[] = [];
const sentDeltas: i64[] = [];

function record(id: u32, delta: i64): void {
  sentIds.push(id);
  sentDeltas.push(delta);
}

function forgetSent(): void {
  sentIds.length = 0;
  sentDeltas.length = 0;
}

/** The delta the last flush sent for `id`, 0 when it sent none. */
function sentFor(id: u32): i64 {
  let total: i64 = 0;
  for (let i = 0; i < sentIds.length; i++) if (unchecked(sentIds[i]) == id) total += unchecked(sentDeltas[i]);
  return total;
}

describe("MetricBatch", () => {
  beforeEach(() => {
    forgetSent();
  });

  it("sums the changes of each metric into one increment", () => {
    const batch = new MetricBatch();
    batch.add(8, 1);
    batch.add(13, 711);
    batch.add(8, 1);
    batch.add(8, 1);
    batch.add(28, 331);
    batch.add(28, 100);
    expect(batch.flush(record, T0)).toBe(3);
    expect(sentIds).toStrictEqual([8, 13, 28]);
    expect(sentFor(8)).toBe(3);
    expect(sentFor(13)).toBe(711);
    expect(sentFor(28)).toBe(431);
  });

  it("sends nothing for changes that cancel out within a batch", () => {
    const batch = new MetricBatch();
    batch.add(5, 1);
    batch.add(13, 711);
    batch.add(8, 1);
    batch.add(5, -1);
    batch.add(13, -711);
    expect(batch.flush(record, T0)).toBe(1);
    expect(sentIds).toStrictEqual([8]);
    expect(sentFor(8)).toBe(1);
  });

  it("sends a gauge's net fall as a negative delta", () => {
    const batch = new MetricBatch();
    batch.add(5, -1);
    batch.add(5, -1);
    batch.add(5, 1);
    batch.flush(record, T0);
    expect(sentFor(5)).toBe(-1);
  });

  it("takes no entry for a zero change, and says when the batch starts", () => {
    const batch = new MetricBatch();
    expect(batch.add(8, 0)).toBe(false);
    expect(batch.empty).toBe(true);
    expect(batch.add(8, 1)).toBe(true, "the first change starts the batch: its root must ask for a tick");
    expect(batch.add(9, 1)).toBe(false);
    expect(batch.add(8, 1)).toBe(false);
    expect(batch.empty).toBe(false);
    batch.flush(record, T0);
    expect(batch.empty).toBe(true);
    expect(batch.add(9, 2)).toBe(true, "after a flush the next change starts a new batch");
  });

  it("keeps a batch whose changes cancelled until it is flushed, then sends nothing", () => {
    const batch = new MetricBatch();
    batch.add(5, 1);
    batch.add(5, -1);
    expect(batch.empty).toBe(false);
    expect(batch.flush(record, T0)).toBe(0);
    expect(sentIds.length).toBe(0);
    expect(batch.empty).toBe(true);
  });

  it("loses no change across flushes: what was sent adds up to what was added", () => {
    const batch = new MetricBatch();
    let added: i64 = 0;
    let sent: i64 = 0;
    let now = T0;
    for (let i = 0; i < 1000; i++) {
      batch.add(<u32>(4 + 4 * (i % 7)), <i64>(i % 13));
      added += <i64>(i % 13);
      if (i % 97 == 0) {
        now += <i64>METRIC_FLUSH_MS;
        if (batch.due(now)) batch.flush(record, now);
      }
    }
    batch.flush(record, now);
    for (let i = 0; i < sentDeltas.length; i++) sent += unchecked(sentDeltas[i]);
    expect(sent).toBe(added);
    expect(batch.empty).toBe(true);
  });

  it("is due a period after the last flush, allowing a little timer lateness, and never when empty", () => {
    const batch = new MetricBatch();
    expect(batch.due(T0)).toBe(false, "nothing held");
    batch.add(8, 1);
    expect(batch.due(T0)).toBe(true, "the first batch goes at the first tick");
    batch.flush(record, T0);
    batch.add(8, 1);
    expect(batch.due(T0 + 50)).toBe(false, "a root ticking every 50 ms does not send every tick");
    expect(batch.due(T0 + <i64>METRIC_FLUSH_MS / 2)).toBe(false);
    expect(batch.due(T0 + <i64>METRIC_FLUSH_MS - 10)).toBe(true, "a timer firing a few ms early still sends");
    expect(batch.due(T0 + <i64>METRIC_FLUSH_MS)).toBe(true);
  });

  it("keeps held changes until a flush: due() does not send them", () => {
    const batch = new MetricBatch();
    batch.add(8, 2);
    batch.due(T0 + 10 * <i64>METRIC_FLUSH_MS);
    expect(batch.empty).toBe(false);
    expect(sentIds.length).toBe(0);
    batch.flush(record, T0);
    expect(sentFor(8)).toBe(2);
  });
});
