// A module built as scripts/build.ts builds release modules (asc -O3, then wasm-opt -O3) but keeping
// its name section, so profiles and size breakdowns can name functions. Names cost no speed.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { repoDir } from "../../tooling/envoy-bin.ts";

// The features AssemblyScript 0.27 emits, as scripts/build.ts passes them to wasm-opt.
const WASM_FEATURES = ["--enable-bulk-memory", "--enable-bulk-memory-opt", "--enable-nontrapping-float-to-int", "--enable-sign-ext", "--enable-mutable-globals"];

const run = promisify(execFile);
const bin = (tool: string) => join(repoDir, "node_modules", ".bin", tool);

export async function namedReleaseBuild(entry: string, ascConfig: string, outFile: string): Promise<void> {
  await run(bin("asc"), [entry, "--config", ascConfig, "--target", "release", "--debug", "--outFile", outFile], { cwd: repoDir });
  await run(bin("wasm-opt"), ["-O3", ...WASM_FEATURES, "--debuginfo", "--strip-producers", outFile, "-o", outFile], { cwd: repoDir });
}
