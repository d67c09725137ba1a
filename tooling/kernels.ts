// Loads build/kernels.wasm (assembly/kernels/index.ts) into Node, so tests and benchmarks run the
// AssemblyScript code the filters run rather than a TypeScript copy of it.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repoDir = resolve(fileURLToPath(new URL("..", import.meta.url)));
export const kernelsWasm = join(repoDir, "build", "kernels.wasm");

export type Family = "o200k" | "cl100k";
const FAMILY_IDS: Record<Family, number> = { o200k: 0, cl100k: 1 };

export interface Kernels {
  /** The estimator's prompt-token count for UTF-8 text (a string is encoded first). */
  estimateTokens(text: string | Uint8Array, family: Family): number;
  /**
   * The completion tokens the filters' UsageTracker counts in a response body, JSON or (`stream`)
   * SSE, handed over in chunks of `chunk` bytes (0: all at once).
   */
  trackUsage(body: string | Uint8Array, stream: boolean, chunk: number): number;
}

interface Exports {
  memory: WebAssembly.Memory;
  inputBuffer(size: number): number;
  estimateTokens(ptr: number, len: number, family: number): number;
  trackUsage(ptr: number, len: number, stream: number, chunk: number): number;
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** True when build/kernels.wasm is missing or older than the code and config it is built from. */
export function kernelsStale(): boolean {
  if (!existsSync(kernelsWasm)) return true;
  const built = statSync(kernelsWasm).mtimeMs;
  // The kernels reach into every filter (their config parsers), so any AssemblyScript source counts.
  const inputs = Math.max(newestSource(join(repoDir, "assembly")), statSync(join(repoDir, "asconfig.kernels.json")).mtimeMs);
  return inputs > built;
}

/** Builds build/kernels.wasm the way `npm run build` does (without the wasm-opt pass) when stale. */
export function ensureKernelsBuilt(): void {
  if (!kernelsStale()) return;
  execFileSync(
    join(repoDir, "node_modules", ".bin", "asc"),
    ["assembly/kernels/index.ts", "--config", "asconfig.kernels.json", "--target", "release", "--outFile", "build/kernels.wasm"],
    { cwd: repoDir, stdio: ["ignore", "inherit", "inherit"] },
  );
}

/** Reads an AssemblyScript string (UTF-16, byte length in the header before it) out of memory. */
function readString(memory: WebAssembly.Memory, ptr: number): string {
  if (!ptr) return "";
  const bytes = new Uint32Array(memory.buffer, ptr - 4, 1)[0];
  return String.fromCharCode(...new Uint16Array(memory.buffer, ptr, bytes >>> 1));
}

/** Instantiates build/kernels.wasm with the one import it needs; its exports, for loaders of each kernel family. */
export async function instantiateKernels(path: string = kernelsWasm): Promise<WebAssembly.Exports & { memory: WebAssembly.Memory; inputBuffer(size: number): number }> {
  let memory: WebAssembly.Memory | undefined;
  const { instance } = await WebAssembly.instantiate(readFileSync(path), {
    env: {
      // The module's only import: AssemblyScript calls it on a failed assertion or a bad allocation.
      abort(message: number, file: number, line: number, column: number): never {
        const where = memory ? `${readString(memory, file)}:${line}:${column}` : `${line}:${column}`;
        throw new Error(`kernels.wasm aborted: ${memory ? readString(memory, message) : message} at ${where}`);
      },
    },
  });
  const raw = instance.exports as WebAssembly.Exports & { collectWhenDue(): void };
  memory = raw.memory as WebAssembly.Memory;
  // Each kernel call ends like a host callback in the filters: with the collector's turn.
  const exports: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(raw)) {
    const kernel = value as (...args: number[]) => number;
    exports[name] = typeof value !== "function" || name === "collectWhenDue" ? value : (...args: number[]) => {
      const result = kernel(...args);
      raw.collectWhenDue();
      return result;
    };
  }
  return exports as WebAssembly.Exports & { memory: WebAssembly.Memory; inputBuffer(size: number): number };
}

export async function loadKernels(path: string = kernelsWasm): Promise<Kernels> {
  const exports = (await instantiateKernels(path)) as unknown as Exports;
  const encoder = new TextEncoder();
  /** Copies the input into the module; its address there. */
  const place = (input: string | Uint8Array): { ptr: number; length: number } => {
    const bytes = typeof input === "string" ? encoder.encode(input) : input;
    const ptr = exports.inputBuffer(bytes.length);
    if (ptr === 0 && bytes.length > 0) throw new Error(`input of ${bytes.length} bytes is too large`);
    // Taken after inputBuffer: growing memory replaces the ArrayBuffer behind older views.
    new Uint8Array(exports.memory.buffer, ptr, bytes.length).set(bytes);
    return { ptr, length: bytes.length };
  };

  return {
    estimateTokens(text, family) {
      const id = FAMILY_IDS[family];
      if (id === undefined) throw new Error(`unknown tokenizer family ${String(family)}`);
      const { ptr, length } = place(text);
      const tokens = exports.estimateTokens(ptr, length, id);
      if (tokens < 0) throw new Error("estimateTokens rejected its arguments");
      return tokens;
    },
    trackUsage(body, stream, chunk) {
      const { ptr, length } = place(body);
      const tokens = exports.trackUsage(ptr, length, stream ? 1 : 0, chunk);
      if (tokens < 0) throw new Error("trackUsage rejected its arguments");
      return tokens;
    },
  };
}
