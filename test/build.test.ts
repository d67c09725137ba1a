// The release modules are what Envoy and Istio load: each must import nothing beyond the
// proxy-wasm host (env.proxy_*) and WASI, or Envoy refuses it with "missing import".
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { repoDir } from "./harness/envoy-bin.ts";

const buildDir = join(repoDir, "build");
const filters = readdirSync(join(repoDir, "assembly"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && !["shared", "kernels", "__tests__"].includes(d.name))
  .map((d) => d.name);

describe("release modules", () => {
  test("every filter folder has been built", () => {
    const built = readdirSync(buildDir).filter((f) => f.endsWith(".wasm")).map((f) => f.slice(0, -5));
    for (const filter of filters) assert.ok(built.includes(filter), `build/${filter}.wasm is missing: run npm run build`);
  });

  for (const filter of filters) {
    for (const variant of ["", "debug/"]) {
      test(`${variant}${filter}.wasm imports only the proxy-wasm host and WASI, and exports the ABI`, () => {
        const module = new WebAssembly.Module(readFileSync(join(buildDir, `${variant}${filter}.wasm`)));
        const foreign = WebAssembly.Module.imports(module)
          .map((i) => `${i.module}.${i.name}`)
          .filter((name) => !/^env\.proxy_[a-z_]+$/.test(name) && !name.startsWith("wasi_snapshot_preview1."));
        assert.deepEqual(foreign, []);
        const exports = WebAssembly.Module.exports(module).map((e) => e.name);
        for (const required of ["proxy_abi_version_0_2_1", "malloc", "proxy_on_context_create", "proxy_on_configure", "memory"]) {
          assert.ok(exports.includes(required), `missing export ${required}`);
        }
      });
    }
  }
});
