// Compiles every filter under assembly/<filter>/index.ts into build/<filter>.wasm (release: asc -O3,
// then binaryen's wasm-opt) and build/debug/<filter>.wasm (with names), and prints module sizes.
// Also builds build/kernels.wasm: the hot pure code exported for Node (estimator accuracy, bench).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const bin = (name: string) => join(root, "node_modules", ".bin", name);

/** Folders of assembly/ that are filters (have an index.ts) rather than shared code. */
export function filterNames(): string[] {
  const dir = join(root, "assembly");
  return readdirSync(dir)
    .filter((name) => name !== "kernels")
    .filter((name) => existsSync(join(dir, name, "index.ts")))
    .sort();
}

function asc(entry: string, outFile: string, target: "release" | "debug", config: string): void {
  execFileSync(bin("asc"), [entry, "--config", config, "--target", target, "--outFile", outFile], {
    cwd: root,
    stdio: "inherit",
  });
}

// The features AssemblyScript 0.27 emits by default; wasm-opt refuses the module without them.
const WASM_FEATURES = ["--enable-bulk-memory", "--enable-bulk-memory-opt", "--enable-nontrapping-float-to-int", "--enable-sign-ext", "--enable-mutable-globals"];

function optimize(file: string): void {
  execFileSync(bin("wasm-opt"), ["-O3", ...WASM_FEATURES, "--strip-debug", "--strip-producers", file, "-o", file], {
    cwd: root,
    stdio: "inherit",
  });
}

export function build(): { name: string; bytes: number; debugBytes: number }[] {
  mkdirSync(join(root, "build", "debug"), { recursive: true });
  const built: { name: string; bytes: number; debugBytes: number }[] = [];
  const modules = filterNames().map((name) => ({ name, entry: `assembly/${name}/index.ts`, config: "asconfig.json" }));
  // The kernels run in Node, not in Envoy: no proxy-wasm SDK, no WASI shim.
  if (existsSync(join(root, "assembly", "kernels", "index.ts"))) {
    modules.push({ name: "kernels", entry: "assembly/kernels/index.ts", config: "asconfig.kernels.json" });
  }
  for (const { name, entry, config } of modules) {
    const release = join("build", `${name}.wasm`);
    const debug = join("build", "debug", `${name}.wasm`);
    asc(entry, release, "release", config);
    optimize(release);
    asc(entry, debug, "debug", config);
    built.push({
      name,
      bytes: statSync(join(root, release)).size,
      debugBytes: statSync(join(root, debug)).size,
    });
  }
  return built;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const built = build();
  for (const m of built) {
    console.log(`${m.name.padEnd(12)} build/${m.name}.wasm ${(m.bytes / 1024).toFixed(1)} KiB` +
      `  (debug ${(m.debugBytes / 1024).toFixed(1)} KiB)`);
  }
}
