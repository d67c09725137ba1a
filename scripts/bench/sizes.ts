// Where a module's bytes go, for the 64 KiB target: each filter is compiled again as release code
// that keeps its names (named-build.ts), and the code section's function bodies are summed by the
// source file they come from.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { namedReleaseBuild } from "./named-build.ts";

export interface SizeShare {
  /** A source file (assembly/json/reader, ~lib/rt/itcms, ...) or "data" (static strings and tables). */
  origin: string;
  bytes: number;
}

export interface ModuleSizes {
  module: string;
  /** Size of the named build without its name section: close to the release module. */
  bytes: number;
  top: SizeShare[];
}

class Reader {
  pos = 0;
  constructor(private bytes: Uint8Array) {}
  get done() {
    return this.pos >= this.bytes.length;
  }
  byte() {
    return this.bytes[this.pos++];
  }
  u32() {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result |= (b & 0x7f) << shift;
      if (!(b & 0x80)) return result >>> 0;
      shift += 7;
    }
  }
  name() {
    const len = this.u32();
    const text = Buffer.from(this.bytes.subarray(this.pos, this.pos + len)).toString("utf8");
    this.pos += len;
    return text;
  }
  sub(len: number) {
    const r = new Reader(this.bytes.subarray(this.pos, this.pos + len));
    this.pos += len;
    return r;
  }
}

/** Function body sizes by function name, the data section's size, and the name section's size. */
function parse(wasm: Uint8Array): { bodies: Map<number, number>; names: Map<number, string>; imported: number; data: number; nameSection: number } {
  const r = new Reader(wasm);
  r.pos = 8;
  const bodies = new Map<number, number>();
  const names = new Map<number, string>();
  let imported = 0;
  let data = 0;
  let nameSection = 0;
  while (!r.done) {
    const id = r.byte();
    const size = r.u32();
    const start = r.pos;
    const section = r.sub(size);
    if (id === 2) {
      for (let n = section.u32(); n > 0; n--) {
        section.name();
        section.name();
        const kind = section.byte();
        if (kind === 0) {
          section.u32();
          imported++;
        } else if (kind === 1) {
          section.byte();
          if (section.byte() & 1) section.u32();
          section.u32();
        } else if (kind === 2) {
          if (section.byte() & 1) section.u32();
          section.u32();
        } else {
          section.byte();
          section.byte();
        }
      }
    } else if (id === 10) {
      const count = section.u32();
      for (let i = 0; i < count; i++) {
        const len = section.u32();
        bodies.set(imported + i, len);
        section.pos += len;
      }
    } else if (id === 11) {
      data = size;
    } else if (id === 0) {
      const name = section.name();
      if (name === "name") {
        nameSection = r.pos - start + 1 + lebLength(size);
        while (!section.done) {
          const kind = section.byte();
          const sub = section.sub(section.u32());
          if (kind !== 1) continue;
          for (let n = sub.u32(); n > 0; n--) {
            const index = sub.u32();
            names.set(index, sub.name());
          }
        }
      }
    }
  }
  return { bodies, names, imported, data, nameSection };
}

const lebLength = (n: number) => Math.max(1, Math.ceil(Math.log2(n + 1) / 7));

/** "assembly/json/reader/JsonReader#scanString" -> "assembly/json/reader"; libraries as one line each. */
function origin(functionName: string): string {
  // The optimizer inlines each filter's overrides (configure, onRequestHeaders, ...) into the
  // virtual dispatchers named after the base class, so this share is mostly filter code.
  if (/^assembly\/host\/(abi|contexts)\//.test(functionName)) return "assembly/host/{abi,contexts} and the filter callbacks inlined into them";
  if (functionName.includes("wasi-shim/")) return "WASI shim";
  if (functionName.startsWith("~lib/rt")) return "AssemblyScript runtime (allocator, GC)";
  if (functionName.startsWith("~lib/")) return "AssemblyScript standard library";
  if (functionName.startsWith("~start")) return "start function (static initializers)";
  const cut = functionName.lastIndexOf("/", functionName.search(/[#~<(]|$/));
  return cut > 0 ? functionName.slice(0, cut) : functionName;
}

export async function moduleSizes(name: string, dir: string, top = 8): Promise<ModuleSizes> {
  const out = join(dir, `${name}-named.wasm`);
  await namedReleaseBuild(`assembly/${name}/index.ts`, "asconfig.json", out);
  const { bodies, names, data, nameSection } = parse(readFileSync(out));
  const byOrigin = new Map<string, number>();
  for (const [index, size] of bodies) {
    const key = origin(names.get(index) ?? "(unnamed)");
    byOrigin.set(key, (byOrigin.get(key) ?? 0) + size);
  }
  byOrigin.set("data (static strings, tables)", data);
  const sorted = [...byOrigin].sort((a, b) => b[1] - a[1]).map(([o, bytes]) => ({ origin: o, bytes }));
  return { module: name, bytes: statSync(out).size - nameSection, top: sorted.slice(0, top) };
}
