// Copies of the built filters that fail on purpose, for testing what Envoy does when a filter's VM
// fails: binaryen wraps one proxy-wasm entry point so that it traps (`unreachable`) when asked.
import binaryen from "binaryen";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const FILTERS = ["admission", "throttle", "metrics", "router"] as const;
export type Filter = (typeof FILTERS)[number];

export type Fault =
  /** proxy_on_request_headers traps for a request with at least this many headers; others run normally. */
  | { requestHeadersAtLeast: number }
  /** proxy_on_configure traps: the plugin cannot start. */
  | { configure: true };

function exportedFunction(module: binaryen.Module, name: string): { internal: string; params: number; results: number } {
  for (let i = 0; i < module.getNumExports(); i++) {
    const info = binaryen.getExportInfo(module.getExportByIndex(i));
    if (info.name === name && info.kind === binaryen.ExternalFunction) {
      const fn = binaryen.getFunctionInfo(module.getFunction(info.value));
      return { internal: info.value, params: fn.params, results: fn.results };
    }
  }
  throw new Error(`the module exports no function ${name}`);
}

/** The module with `fault` built in. */
export function withFault(wasm: Uint8Array, fault: Fault): Uint8Array {
  const module = binaryen.readBinary(wasm);
  // What AssemblyScript emits by default; more (e.g. reference types) would change the encoding
  // into one Envoy's V8 refuses to load.
  const F = binaryen.Features;
  module.setFeatures(F.MutableGlobals | F.NontrappingFPToInt | F.SignExt | F.BulkMemory | F.BulkMemoryOpt);
  try {
    const entry = "configure" in fault ? "proxy_on_configure" : "proxy_on_request_headers";
    const target = exportedFunction(module, entry);
    const args = binaryen.expandType(target.params).map((type, i) => module.local.get(i, type));
    const forward = module.return(module.call(target.internal, args, target.results));
    const body =
      "configure" in fault
        ? module.unreachable()
        : module.block(null, [
            // The second argument of proxy_on_request_headers is the number of headers.
            module.if(module.i32.ge_u(module.local.get(1, binaryen.i32), module.i32.const(fault.requestHeadersAtLeast)), module.unreachable()),
            forward,
          ], target.results);
    module.addFunction("llm_mesh_test_fault", target.params, target.results, [], body);
    module.removeExport(entry);
    module.addFunctionExport("llm_mesh_test_fault", entry);
    if (!module.validate()) throw new Error(`the ${entry} wrapper does not validate`);
    return module.emitBinary();
  } finally {
    module.dispose();
  }
}

/**
 * A build directory holding every filter from `buildDir`, with `filter` replaced by a copy that
 * has `fault`: point a scenario's {{BUILD_DIR}} at it.
 */
export function faultyBuild(buildDir: string, dir: string, filter: Filter, fault: Fault): string {
  mkdirSync(dir, { recursive: true });
  for (const name of FILTERS) {
    const source = join(buildDir, `${name}.wasm`);
    const target = join(dir, `${name}.wasm`);
    if (name === filter) writeFileSync(target, withFault(readFileSync(source), fault));
    else copyFileSync(source, target);
  }
  return dir;
}
