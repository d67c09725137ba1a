// `npm ci` on a fresh clone must print no warning about install scripts: every dependency with one
// is allowed or denied in package.json's `allowScripts` (npm 11 skips the scripts it does not cover,
// and says so). Both denied scripts are shown here not to be needed, with the scripts skipped as
// npm ci skips them:
// - esbuild's postinstall (install.js) only fetches the platform binary when the optional
//   @esbuild/<platform> package is missing (the lockfile installs it) and swaps its CLI shim for
//   that binary; tsx calls esbuild's JavaScript API, which finds the binary itself.
// - glob-promise's postinstall (npm-install-peers) runs a nested npm to install its peer `glob`,
//   which npm ≥ 7 already installs.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";

const readJson = (path: string) => JSON.parse(readFileSync(join(repoDir, path), "utf8"));
const requireFrom = (dir: string) => createRequire(join(repoDir, dir, "package.json"));

describe("npm ci", () => {
  test("every dependency with an install script is covered by allowScripts", () => {
    const allowScripts: Record<string, boolean> = readJson("package.json").allowScripts ?? {};
    const packages: Record<string, { hasInstallScript?: boolean; version?: string }> = readJson("package-lock.json").packages;
    const withScripts = Object.entries(packages)
      .filter(([path, entry]) => path !== "" && entry.hasInstallScript)
      .map(([path, entry]) => ({ name: path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length), version: entry.version }));
    assert.ok(withScripts.length > 0, "the lockfile marks packages with install scripts (hasInstallScript)");
    const uncovered = withScripts.filter(({ name, version }) => !(name in allowScripts) && !(`${name}@${version}` in allowScripts));
    assert.deepEqual(uncovered, [], "npm ci warns about these: allow or deny each in package.json allowScripts");
  });

  test("esbuild works without its postinstall: tsx's transform finds the platform binary", async () => {
    const esbuild = await import(requireFrom("node_modules/tsx").resolve("esbuild"));
    const { code } = esbuild.transformSync("const n: number = 1;", { loader: "ts" });
    assert.equal(code.trim(), "const n = 1;");
  });

  test("glob-promise has its peer glob without npm-install-peers", async () => {
    const fromGlobPromise = requireFrom("node_modules/glob-promise");
    const glob = JSON.parse(readFileSync(fromGlobPromise.resolve("glob/package.json"), "utf8"));
    assert.match(glob.version, /^8\./, "glob-promise 5 wants glob ^8.0.3");
    const { promise } = requireFrom("node_modules/@as-pect/cli")("glob-promise");
    assert.deepEqual(await promise("as-pect.config.js", { cwd: repoDir }), ["as-pect.config.js"]);
  });
});
