// Each filter's own configuration parser (assembly/<filter>/config.ts), run from Node through the
// check<Filter>Config exports of build/kernels.wasm, so that tests can hold a filter and its
// published JSON Schema (schemas/<filter>.schema.json) to the same fixtures.
import { ensureKernelsBuilt, instantiateKernels } from "./kernels.ts";

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

export async function loadConfigCheckers(): Promise<ConfigCheckers> {
  ensureKernelsBuilt();
  const exports = (await instantiateKernels()) as unknown as Exports;
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
