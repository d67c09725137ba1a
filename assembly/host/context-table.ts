// The live stream contexts of one VM by context id, looked up on every callback Envoy makes.
//
// Envoy numbers contexts from one counter per VM, so the ids alive at a time are a narrow, mostly
// dense window: the id's low bits alone spread them over the slots, and a lookup usually reads one
// slot. Open addressing with linear probing keeps a long-lived stream (a queued request, a long SSE
// answer) in its slot while later ids move past it, where a table indexed by the low bits alone would
// have to grow to span the whole window. Removal shifts the following entries back (no tombstones),
// so a table that has seen a million streams is as fast as a new one. The table doubles at half
// full and never shrinks: its size follows the most streams a worker ever had at once.

/** T is a context class: anything with a `contextId: u32`. */
export class ContextTable<T> {
  private slots: StaticArray<T | null>;
  private mask: u32;
  private count: u32 = 0;

  constructor(capacity: u32 = 32) {
    // A power of two, so that `id & mask` is the home slot.
    const size = capacity < 2 ? 2 : 1 << (32 - clz(capacity - 1));
    this.slots = new StaticArray<T | null>(size);
    this.mask = size - 1;
  }

  get size(): u32 {
    return this.count;
  }

  get(id: u32): T | null {
    const slots = this.slots;
    const mask = this.mask;
    let at = id & mask;
    let entry = unchecked(slots[at]);
    while (entry != null && entry.contextId != id) {
      at = (at + 1) & mask;
      entry = unchecked(slots[at]);
    }
    return entry;
  }

  /** Adds a context; false (and no change) when one with its id is already there. */
  add(entry: T): bool {
    if (this.get(entry.contextId) != null) return false;
    if ((this.count + 1) * 2 > this.mask + 1) this.grow();
    this.place(entry);
    this.count++;
    return true;
  }

  /** Removes and returns the context with this id, or null when there is none. */
  remove(id: u32): T | null {
    const slots = this.slots;
    const mask = this.mask;
    let hole = id & mask;
    let found = unchecked(slots[hole]);
    while (found != null && found.contextId != id) {
      hole = (hole + 1) & mask;
      found = unchecked(slots[hole]);
    }
    if (found == null) return null;
    // Every entry after the hole, up to the next empty slot, moves back into it unless its home slot
    // lies cyclically after the hole (then the hole is not on its probe path).
    let next = (hole + 1) & mask;
    let entry = unchecked(slots[next]);
    while (entry != null) {
      const home = entry.contextId & mask;
      if (((next - home) & mask) >= ((next - hole) & mask)) {
        unchecked((slots[hole] = entry));
        hole = next;
      }
      next = (next + 1) & mask;
      entry = unchecked(slots[next]);
    }
    unchecked((slots[hole] = null));
    this.count--;
    return found;
  }

  private place(entry: T): void {
    const slots = this.slots;
    const mask = this.mask;
    let at = entry.contextId & mask;
    while (unchecked(slots[at]) != null) at = (at + 1) & mask;
    unchecked((slots[at] = entry));
  }

  private grow(): void {
    const old = this.slots;
    const size = <u32>old.length * 2;
    this.slots = new StaticArray<T | null>(size);
    this.mask = size - 1;
    for (let i = 0; i < old.length; i++) {
      const entry = unchecked(old[i]);
      if (entry != null) this.place(entry);
    }
  }
}
