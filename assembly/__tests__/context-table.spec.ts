import { ContextTable } from "../host/context-table";

class Entry {
  constructor(public contextId: u32) {}
}

/** The ids a table holds, checked one by one against what it should hold. */
function expectHolds(table: ContextTable<Entry>, present: Set<u32>, from: u32, to: u32): void {
  for (let id = from; id < to; id++) {
    const entry = table.get(id);
    if (present.has(id)) {
      expect(entry).not.toBeNull();
      expect(entry!.contextId).toBe(id);
    } else {
      expect(entry).toBeNull();
    }
  }
  expect(table.size).toBe(present.size);
}

describe("ContextTable", () => {
  it("finds what was added and forgets what was removed", () => {
    const table = new ContextTable<Entry>(4);
    expect(table.get(7)).toBeNull();
    expect(table.add(new Entry(7))).toBe(true);
    expect(table.add(new Entry(8))).toBe(true);
    expect(table.get(7)!.contextId).toBe(7);
    expect(table.remove(7)!.contextId).toBe(7);
    expect(table.get(7)).toBeNull();
    expect(table.remove(7)).toBeNull();
    expect(table.get(8)!.contextId).toBe(8);
    expect(table.size).toBe(1);
  });

  it("refuses a second context with the same id", () => {
    const table = new ContextTable<Entry>();
    const first = new Entry(3);
    expect(table.add(first)).toBe(true);
    expect(table.add(new Entry(3))).toBe(false);
    expect(table.get(3)).toBe(first);
    expect(table.size).toBe(1);
  });

  it("keeps ids that share a home slot reachable after removals around the end of the table", () => {
    // In 8 slots, 6, 14, 22 and 30 all start at slot 6 and wrap around to slots 7, 0 and 1.
    const table = new ContextTable<Entry>(8);
    const present = new Set<u32>();
    const ids: u32[] = [6, 14, 22];
    for (let i = 0; i < ids.length; i++) {
      table.add(new Entry(ids[i]));
      present.add(ids[i]);
    }
    table.add(new Entry(7));
    present.add(7);
    table.remove(6);
    present.delete(6);
    expectHolds(table, present, 0, 40);
    table.remove(14);
    present.delete(14);
    expectHolds(table, present, 0, 40);
  });

  it("keeps a long-lived stream reachable while 200 000 later ids come and go", () => {
    const table = new ContextTable<Entry>(32);
    table.add(new Entry(2));
    for (let id: u32 = 3; id < 200_003; id++) {
      table.add(new Entry(id));
      if (id > 10) table.remove(id - 8);
    }
    expect(table.get(2)!.contextId).toBe(2);
    expect(table.size).toBe(9);
  });

  it("agrees with a set over a long run of adds and removes in a shifting window", () => {
    const table = new ContextTable<Entry>(2);
    const present = new Set<u32>();
    let seed: u32 = 12345;
    let next: u32 = 1;
    for (let step = 0; step < 20000; step++) {
      seed = seed * 1103515245 + 12345;
      const roll = (seed >> 16) % 100;
      if (roll < 55) {
        table.add(new Entry(next));
        present.add(next);
        next++;
      } else if (next > 1) {
        // Streams mostly end soon after they start; some live long.
        const back = roll < 95 ? ((seed >> 8) % 40) + 1 : ((seed >> 4) % 5000) + 1;
        const id: u32 = back < next ? next - back : 1;
        const removed = table.remove(id);
        expect(removed != null).toBe(present.has(id));
        present.delete(id);
      }
    }
    expectHolds(table, present, 0, next + 10);
  });
});
