// How much linear memory the Wasm VMs of an Envoy process hold, read from /proc: Envoy reports no
// per-VM memory itself. Used by the soak run and by the test that a VM's memory stays bounded.
import { readFileSync } from "node:fs";

export interface WasmMemory {
  /** Linear memory of all VMs (the size each memory has grown to). */
  sizeKb: number;
  /** The part of it the kernel holds in RAM. */
  residentKb: number;
  vms: number;
}

/**
 * V8 reserves a large inaccessible region per memory and opens its start for the memory's current
 * size, so each accessible mapping right below a reservation of 4 GiB or more is one VM's memory.
 */
export function wasmMemory(pid: number): WasmMemory {
  const maps = readFileSync(`/proc/${pid}/smaps`, "utf8").split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).map((block) => {
    const [range, perms] = block.split(" ");
    const [start, end] = range.split("-").map((x) => BigInt(`0x${x}`));
    return { start, end, perms, sizeKb: Number((end - start) / 1024n), rssKb: Number(/\nRss:\s+(\d+) kB/.exec(block)?.[1] ?? 0) };
  });
  const byEnd = new Map(maps.map((m) => [m.end, m]));
  const memory: WasmMemory = { sizeKb: 0, residentKb: 0, vms: 0 };
  for (const cage of maps) {
    if (!cage.perms.startsWith("---") || cage.sizeKb < 4 * 1024 * 1024) continue;
    const open = byEnd.get(cage.start);
    if (!open || !open.perms.startsWith("rw")) continue;
    memory.vms++;
    memory.sizeKb += open.sizeKb;
    memory.residentKb += open.rssKb;
  }
  return memory;
}
