// Each filter's own configuration parser (assembly/<filter>/config.ts), run from Node through the
// check<Filter>Config exports of build/kernels.wasm, so that tests can hold a filter and its
// published JSON Schema (schemas/<filter>.schema.json) to the same fixtures.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { ensureKernelsBuilt, kernelsWasm, repoDir } from "./kernels.ts";

export type ConfigVerdict = { ok: true } | { ok: false; error: string };

export interface ConfigCheckers {
  /** The filter's verdict on a configuration text, exactly as Envoy would hand it over. */
  check(filter: string, text: string): ConfigVerdict;
  /** Filters whose parser build/kernels.wasm carries. */
  filters: string[];
}

interface Exports {
  memory: WebAssembly.Memory;
  inputBuffer(size: number): number;
  configErrorPointer(): number;
  [check: string]: unknown;
}

const exportName = (filter: string) => `check${filter[0].toUpperCase()}${filter.slice(1)}Config`;

function newestTs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestTs(path));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/**
 * Builds build/kernels.wasm when it is older than any AssemblyScript source: the config parsers
 * live in the filter folders, which ensureKernelsBuilt() does not look at.
 */
function ensureParsersBuilt(): void {
  ensureKernelsBuilt();
  const sources = newestTs(join(repoDir, "assembly"));
  if (statSync(kernelsWasm).mtimeMs >= sources) return;
  execFileSync(
    join(repoDir, "node_modules", ".bin", "asc"),
    ["assembly/kernels/index.ts", "--config", "asconfig.kernels.json", "--target", "release", "--outFile", "build/kernels.wasm"],
    { cwd: repoDir, stdio: ["ignore", "inherit", "inherit"] },
  );
}

export async function loadConfigCheckers(): Promise<ConfigCheckers> {
  ensureParsersBuilt();
  const { instance } = await WebAssembly.instantiate(readFileSync(kernelsWasm), {
    env: {
      abort(): never {
        throw new Error("kernels.wasm aborted: a config parser trapped (a filter would fail to start)");
      },
    },
  });
  const exports = instance.exports as unknown as Exports;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const filters = Object.keys(exports)
    .map((name) => /^check([A-Z][a-z]*)Config$/.exec(name)?.[1].toLowerCase())
    .filter((f): f is string => f !== undefined);

  return {
    filters,
    check(filter, text) {
      const fn = exports[exportName(filter)];
      if (typeof fn !== "function") throw new Error(`build/kernels.wasm has no ${exportName(filter)}: append it to assembly/kernels/index.ts`);
      const bytes = encoder.encode(text);
      const ptr = exports.inputBuffer(bytes.length);
      if (ptr === 0 && bytes.length > 0) throw new Error(`config of ${bytes.length} bytes is too large`);
      // Taken after inputBuffer: growing memory replaces the ArrayBuffer behind older views.
      new Uint8Array(exports.memory.buffer, ptr, bytes.length).set(bytes);
      const length = (fn as (ptr: number, len: number) => number)(ptr, bytes.length);
      if (length < 0) throw new Error(`${exportName(filter)} rejected its arguments`);
      if (length === 0) return { ok: true };
      const at = exports.configErrorPointer();
      return { ok: false, error: decoder.decode(new Uint8Array(exports.memory.buffer, at, length)) };
    },
  };
}
