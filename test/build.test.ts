// The release modules are what Envoy and Istio load: each must import nothing beyond the
// proxy-wasm host (env.proxy_*) and WASI, or Envoy refuses it with "missing import"; and each must
// export the callbacks of exactly the hooks its contexts override: Envoy never calls a callback the
// module does not export, and calls every one it does (a filter's index.ts lists them; see
// assembly/host/abi.ts).
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";

const buildDir = join(repoDir, "build");
const assemblyFolders = readdirSync(join(repoDir, "assembly"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && d.name !== "__tests__")
  .map((d) => d.name);
/** A folder with an index.ts is a module Envoy loads; the others are the layers the modules share. */
const isModule = (folder: string) => existsSync(join(repoDir, "assembly", folder, "index.ts"));
const filters = assemblyFolders.filter((f) => isModule(f) && f !== "kernels");
const layers = assemblyFolders.filter((f) => !isModule(f));

/**
 * What Envoy needs to load a module and to create, configure and delete its contexts, and the tick
 * that sends the counter and gauge changes every filter holds back (assembly/host/metric-batch.ts).
 */
const ALWAYS = ["memory", "malloc", "proxy_abi_version_0_2_1", "proxy_on_context_create", "proxy_on_configure", "proxy_on_tick", "proxy_on_delete"];

/** The hooks of assembly/host/contexts.ts and the export Envoy calls each through. */
const HOOK_EXPORTS: Record<string, string> = {
  onConfigure: "proxy_on_configure",
  onTick: "proxy_on_tick",
  onRequestHeaders: "proxy_on_request_headers",
  onRequestBody: "proxy_on_request_body",
  onResponseHeaders: "proxy_on_response_headers",
  onResponseBody: "proxy_on_response_body",
  onDone: "proxy_on_done",
  onLog: "proxy_on_log",
  onDelete: "proxy_on_delete",
  onGrpcReceive: "proxy_on_grpc_receive",
  onGrpcClose: "proxy_on_grpc_close",
};

/** The shared base classes filters extend, other than contexts.ts's own (whose hooks do nothing), by name: their file's source. */
const sharedBases = new Map(
  layers.flatMap((layer) =>
    readdirSync(join(repoDir, "assembly", layer))
      .filter((f) => f.endsWith(".ts") && !(layer === "host" && f === "contexts.ts"))
      .flatMap((f) => {
        const source = readFileSync(join(repoDir, "assembly", layer, f), "utf8");
        return [...source.matchAll(/^export (?:abstract )?class (\w+)/gm)].map(([, name]) => [name, source] as const);
      }),
  ),
);

/** The hooks a source defines, as the exports Envoy calls them through. */
function hookExports(source: string): string[] {
  return [...source.matchAll(/^\s+(on[A-Z]\w*)\(/gm)].map(([, hook]) => HOOK_EXPORTS[hook]).filter(Boolean);
}

/**
 * The exports a filter's sources need: one per hook a class of theirs defines or inherits from a
 * shared base, and those of every other filter whose classes it runs (the one module's stages,
 * which it imports from their folders).
 */
function neededExports(filter: string, seen = new Set<string>()): string[] {
  const dir = join(repoDir, "assembly", filter);
  const needed = new Set(ALWAYS);
  seen.add(filter);
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
    const source = readFileSync(join(dir, file), "utf8");
    for (const hook of hookExports(source)) needed.add(hook);
    for (const [, base] of source.matchAll(/\bextends (\w+)/g)) {
      for (const hook of hookExports(sharedBases.get(base) ?? "")) needed.add(hook);
    }
    for (const [, folder] of source.matchAll(/from "\.\.\/(\w+)\//g)) {
      if (filters.includes(folder) && !seen.has(folder)) for (const hook of neededExports(folder, seen)) needed.add(hook);
    }
  }
  return [...needed].sort();
}

describe("release modules", () => {
  test("every filter folder has been built", () => {
    const built = readdirSync(buildDir).filter((f) => f.endsWith(".wasm")).map((f) => f.slice(0, -5));
    for (const filter of filters) assert.ok(built.includes(filter), `build/${filter}.wasm is missing: run npm run build`);
  });

  for (const filter of filters) {
    for (const variant of ["", "debug/"]) {
      test(`${variant}${filter}.wasm imports only the proxy-wasm host and WASI, and exports the callbacks it handles`, () => {
        const module = new WebAssembly.Module(readFileSync(join(buildDir, `${variant}${filter}.wasm`)));
        const foreign = WebAssembly.Module.imports(module)
          .map((i) => `${i.module}.${i.name}`)
          .filter((name) => !/^env\.proxy_[a-z_]+$/.test(name) && !name.startsWith("wasi_snapshot_preview1."));
        assert.deepEqual(foreign, []);
        const exports = WebAssembly.Module.exports(module).map((e) => e.name);
        const needed = neededExports(filter);
        const missing = needed.filter((name) => !exports.includes(name));
        assert.deepEqual(missing, [], `assembly/${filter}/index.ts must export these, or Envoy never calls them`);
        const unused = exports.filter((name) => name.startsWith("proxy_on_") && !needed.includes(name));
        assert.deepEqual(unused, [], `assembly/${filter}/index.ts exports callbacks no hook of the filter handles: each costs a call per stream`);
      });
    }
  }
});
