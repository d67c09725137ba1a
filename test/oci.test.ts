// What is ours in shipping a filter as an OCI image: layouts whose bytes depend only on the module,
// version and commit (tooling/oci/), and `npm run publish` handing them to skopeo without a digest
// changing on the way, since Istio's WasmPlugin pins the manifest digest `npm run package` prints.
// Checked against real tools only: Debian's docker-registry (CNCF distribution) with htpasswd
// Basic auth, skopeo, GNU tar, and the real Envoy fetching the module from the registry.
//
// Envoy's remote data source sends no credentials, so Envoy is pointed at a second registry
// process: read-only and anonymous, over the same storage directory the authenticated registry
// wrote. The bytes Envoy loads are exactly the ones `npm run publish` pushed, and the registry that
// took the push still demands a password (checked below: Envoy fetching from it gets a 401).
//
// Nothing here skips: without skopeo, docker-registry or build/admission.wasm the tests fail and
// say what to install or run, as a user's `npm run publish` would.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, startEnvoy, tail, validateScenario } from "../tooling/envoy.ts";
import { postJson } from "../tooling/http.ts";
import { type LocalRegistry, startLocalRegistry } from "../tooling/local-registry.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { sha256Digest } from "../tooling/oci/blob.ts";
import { ANNOTATION, MEDIA, parseManifest, PLUGIN_FILE } from "../tooling/oci/image.ts";
import { type LayoutImage, readLayout } from "../tooling/oci/layout.ts";

const run = promisify(execFile);

const FILTER = "admission";
/** The root context the admission filter registers (FILTER_NAME in assembly/admission/filter.ts). */
const ROOT_ID = "llm-admission";
const MODULE = join(repoDir, "build", `${FILTER}.wasm`);
const USER = "mesh-ci";
const PASSWORD = "correct horse battery staple";
const REPOSITORY = "llm-mesh";
const TAG = "e2e";

/** Runs one of the project's npm scripts the way a user does; returns stdout. */
async function npmRun(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  try {
    const { stdout } = await run("npm", ["run", "--silent", script, "--", ...args], { cwd: repoDir, env: { ...process.env, ...env }, encoding: "utf8" });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`npm run ${script} failed: ${e.stderr || e.message}`);
  }
}

/** "<filter> <kind> <digest> <dir>" lines of `npm run package`. */
function packagedDigests(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of stdout.matchAll(/^(\S+)\s+(wasm|compat)\s+(sha256:[0-9a-f]{64})\s/gm)) out[`${m[1]}/${m[2]}`] = m[3];
  return out;
}

/** "<filter> <kind> <reference>@<digest>" lines of `npm run publish`. */
function publishedImages(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of stdout.matchAll(/^(\S+)\s+(wasm|compat)\s+(\S+@sha256:[0-9a-f]{64})$/gm)) out[`${m[1]}/${m[2]}`] = m[3];
  return out;
}

/** Every file under `dir`, by relative path, with its bytes. */
function filesUnder(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (const path of readdirSync(dir, { recursive: true, encoding: "utf8" })) {
    if (statSync(join(dir, path)).isFile()) files.set(path, readFileSync(join(dir, path)));
  }
  return files;
}

function dockerConfig(dir: string, auths: Record<string, unknown>): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify({ auths }));
  return dir;
}

/**
 * Waits until a process's log matches: a registry writes its access log line after the response,
 * so the client can be done before the line reaches us.
 */
async function logShows(log: () => string, re: RegExp, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!re.test(log())) {
    if (Date.now() > deadline) assert.fail(`no log line matched ${re}; log tail:\n${tail(log(), 30)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const basicAuth = (user: string, password: string) => ({ auth: Buffer.from(`${user}:${password}`).toString("base64") });

describe("OCI images of a filter", () => {
  let work: string;
  let buildDir: string;
  let layoutDir: string;
  let storage: string;
  let registry: LocalRegistry;
  let dockerDir: string;
  let wasm: Buffer;
  let images: LayoutImage[];
  let packaged: Record<string, string>;
  const running: { stop(): Promise<void> }[] = [];

  /** A GET on the registry as the pushing user, straight over HTTP: a reader that is not skopeo. */
  const registryGet = (path: string) =>
    fetch(`${registry.url}/v2/${REPOSITORY}/${FILTER}/${path}`, {
      headers: { accept: MEDIA.ociManifest, authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}` },
    });

  before(async () => {
    mkdirSync(join(repoDir, ".tmp"), { recursive: true });
    work = mkdtempSync(join(repoDir, ".tmp", "oci-"));
    // A private build dir: the test packages exactly this module, whatever else build/ holds or
    // whoever rebuilds it meanwhile.
    buildDir = join(work, "build");
    mkdirSync(buildDir);
    try {
      copyFileSync(MODULE, join(buildDir, `${FILTER}.wasm`));
    } catch {
      assert.fail(`${MODULE} is missing: run \`npm run build\` first`);
    }
    wasm = readFileSync(join(buildDir, `${FILTER}.wasm`));
    layoutDir = join(work, "oci");
    storage = join(work, "registry-storage");
    registry = await startLocalRegistry({ storageDir: storage, workDir: work, auth: { kind: "htpasswd", users: { [USER]: PASSWORD } } });
    running.push(registry);
    dockerDir = dockerConfig(join(work, "docker"), { [registry.host]: basicAuth(USER, PASSWORD) });
  });

  after(async () => {
    for (const p of running.reverse()) await p.stop();
    if (work && !process.env.KEEP_TMP) rmSync(work, { recursive: true, force: true });
  });

  test("npm run package writes both formats as an OCI layout, the same bytes every time", async () => {
    const head = await run("git", ["rev-parse", "HEAD"], { cwd: repoDir, encoding: "utf8" }).then((r) => r.stdout.trim(), () => "unknown");
    const first = await npmRun("package", ["--build-dir", buildDir, "--out-dir", layoutDir]);
    packaged = packagedDigests(first);
    assert.deepEqual(Object.keys(packaged).sort(), [`${FILTER}/compat`, `${FILTER}/wasm`], first);

    // Again into another dir: same digests, and every file of the layout byte-identical.
    const again = join(work, "oci-again");
    assert.deepEqual(packagedDigests(await npmRun("package", ["--build-dir", buildDir, "--out-dir", again])), packaged);
    const firstFiles = filesUnder(join(layoutDir, FILTER));
    const againFiles = filesUnder(join(again, FILTER));
    assert.deepEqual([...againFiles.keys()].sort(), [...firstFiles.keys()].sort());
    for (const [path, bytes] of firstFiles) assert.ok(bytes.equals(againFiles.get(path)!), path);
    assert.deepEqual(JSON.parse(readFileSync(join(layoutDir, FILTER, "oci-layout"), "utf8")), { imageLayoutVersion: "1.0.0" });

    images = readLayout(join(layoutDir, FILTER));
    const pkg = JSON.parse(readFileSync(join(repoDir, "package.json"), "utf8"));
    for (const image of images) {
      assert.equal(image.manifest.descriptor.digest, packaged[`${FILTER}/${image.kind}`]);
      const manifest = parseManifest(image.manifest.bytes);
      assert.equal(manifest.mediaType, MEDIA.ociManifest, "single-platform image manifest, not an index");
      assert.equal(manifest.annotations?.[ANNOTATION.version], pkg.version);
      assert.equal(manifest.annotations?.[ANNOTATION.revision], head);
      assert.equal(manifest.annotations?.[ANNOTATION.title], `llm-mesh-${FILTER}`);
      assert.ok(manifest.annotations?.[ANNOTATION.source]);
    }

    // The Wasm artifact: exactly two layers, the raw module and the runtime config.
    const artifactImage = images.find((i) => i.kind === "wasm")!;
    const artifact = parseManifest(artifactImage.manifest.bytes);
    assert.deepEqual(artifact.layers.map((l) => l.mediaType).sort(), [MEDIA.wasmContent, MEDIA.wasmConfig].sort());
    assert.equal(artifact.config.mediaType, MEDIA.wasmConfig);
    const moduleLayer = artifact.layers.find((l) => l.mediaType === MEDIA.wasmContent)!;
    assert.equal(moduleLayer.digest, sha256Digest(wasm));
    assert.equal(moduleLayer.size, wasm.length);
    const runtimeConfig = JSON.parse(artifactImage.blobs.find((b) => b.descriptor.digest === artifact.config.digest)!.bytes.toString());
    assert.equal(runtimeConfig.type, "envoy_proxy");
    assert.ok(runtimeConfig.abiVersions.some((v: string) => v.startsWith("proxy_abi_version_0_2")), JSON.stringify(runtimeConfig));

    // The compat image: its last layer is tar+gzip holding plugin.wasm, with nothing from the
    // build machine, as GNU tar reads it.
    const compatImage = images.find((i) => i.kind === "compat")!;
    const compat = parseManifest(compatImage.manifest.bytes);
    assert.equal(compat.annotations?.[ANNOTATION.variant], "compat");
    const last = compat.layers.at(-1)!;
    assert.equal(last.mediaType, MEDIA.ociLayerGzip);
    const gz = compatImage.blobs.find((b) => b.descriptor.digest === last.digest)!.bytes;
    assert.deepEqual([...gz.subarray(0, 4)], [0x1f, 0x8b, 8, 0], "gzip with no FNAME/FEXTRA flags");
    assert.equal(gz.readUInt32LE(4), 0, "gzip mtime is zero");
    const layerPath = join(layoutDir, FILTER, "blobs", "sha256", last.digest.slice(7));
    const tarEnv = { ...process.env, TZ: "UTC" };
    const listing = (await run("tar", ["--numeric-owner", "--full-time", "-tvzf", layerPath], { env: tarEnv, encoding: "utf8" })).stdout;
    assert.match(listing, new RegExp(`^-rw-r--r-- 0/0 +${wasm.length} 1970-01-01 00:00:00 ${PLUGIN_FILE}\\n$`));
    const extracted = (await run("tar", ["-xOzf", layerPath, PLUGIN_FILE], { encoding: "buffer", maxBuffer: 16 << 20 })).stdout;
    assert.ok(Buffer.from(extracted).equals(wasm), "the layer's plugin.wasm is the module");
    const imageConfig = JSON.parse(compatImage.blobs.find((b) => b.descriptor.digest === compat.config.digest)!.bytes.toString());
    assert.deepEqual(imageConfig.rootfs, { type: "layers", diff_ids: [sha256Digest(gunzipSync(gz))] });

    // The digest follows the module: one more custom section moves both manifests.
    const name = Buffer.from("llm-mesh-test");
    const changed = Buffer.concat([wasm, Buffer.from([0, name.length + 1, name.length]), name]);
    const otherBuild = join(work, "build-changed");
    mkdirSync(otherBuild);
    writeFileSync(join(otherBuild, `${FILTER}.wasm`), changed);
    const changedDigests = packagedDigests(await npmRun("package", ["--build-dir", otherBuild, "--out-dir", join(work, "oci-changed")]));
    assert.notEqual(changedDigests[`${FILTER}/wasm`], packaged[`${FILTER}/wasm`]);
    assert.notEqual(changedDigests[`${FILTER}/compat`], packaged[`${FILTER}/compat`]);
  });

  test("npm run package refuses what is not a proxy-wasm module", async () => {
    const bad = join(work, "build-bad");
    mkdirSync(bad);
    writeFileSync(join(bad, "broken.wasm"), "not wasm");
    await assert.rejects(npmRun("package", ["--build-dir", bad, "--out-dir", join(work, "oci-bad")]), /broken\.wasm: not a valid WebAssembly module/);
  });

  test("npm run publish pushes both images with skopeo; the registry holds the layout's digests", async () => {
    const stdout = await npmRun("publish", [`${registry.host}/${REPOSITORY}:${TAG}`, "--oci-dir", layoutDir, "--build-dir", buildDir], { DOCKER_CONFIG: dockerDir });
    assert.deepEqual(publishedImages(stdout), {
      [`${FILTER}/wasm`]: `${registry.host}/${REPOSITORY}/${FILTER}:${TAG}@${packaged[`${FILTER}/wasm`]}`,
      [`${FILTER}/compat`]: `${registry.host}/${REPOSITORY}/${FILTER}:${TAG}-compat@${packaged[`${FILTER}/compat`]}`,
    }, stdout);
    await logShows(registry.log, new RegExp(`"PUT /v2/${REPOSITORY}/${FILTER}/manifests/${TAG} HTTP/1\\.1" 201 \\d+ "[^"]*" "skopeo/`));

    for (const image of images) {
      const tag = image.kind === "wasm" ? TAG : `${TAG}-compat`;
      for (const reference of [tag, image.manifest.descriptor.digest]) {
        const res = await registryGet(`manifests/${reference}`);
        const bytes = Buffer.from(await res.arrayBuffer());
        assert.equal(res.status, 200, `${image.kind} manifest by ${reference}`);
        assert.equal(res.headers.get("docker-content-digest"), image.manifest.descriptor.digest);
        assert.ok(bytes.equals(image.manifest.bytes), `${image.kind} manifest by ${reference}: the layout's bytes`);
      }
      for (const blob of image.blobs) {
        const res = await registryGet(`blobs/${blob.descriptor.digest}`);
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(blob.bytes), `blob ${blob.descriptor.digest}`);
      }
    }
  });

  test("publish fails clearly on a wrong password, no credentials, no skopeo, a changed digest, or a module newer than its layout", async () => {
    const target = `${registry.host}/${REPOSITORY}:wrong`;
    const args = [target, "--oci-dir", layoutDir, "--build-dir", buildDir];
    // The key spelled as a URL, as older `docker login`s wrote it.
    const wrong = dockerConfig(join(work, "docker-wrong"), { [`http://${registry.host}`]: basicAuth(USER, "nope") });
    const refused = /unauthorized: authentication required\n.*\$DOCKER_CONFIG\/config\.json/;
    await assert.rejects(npmRun("publish", args, { DOCKER_CONFIG: wrong }), refused);
    await assert.rejects(npmRun("publish", args, { DOCKER_CONFIG: dockerConfig(join(work, "docker-none"), {}) }), refused);
    assert.equal((await registryGet("manifests/wrong")).status, 404, "nothing was tagged");

    // The CLI with another PATH; node and tsx are found without one.
    const publishWithPath = (path: string) =>
      run(process.execPath, ["--import", "tsx", "scripts/publish.ts", ...args], { cwd: repoDir, env: { ...process.env, PATH: path, DOCKER_CONFIG: dockerDir } });
    const noTools = join(work, "empty-path");
    mkdirSync(noTools);
    await assert.rejects(publishWithPath(noTools), (err: { stderr: string }) => /skopeo is not installed: apt-get install -y skopeo/.test(err.stderr));
    // A skopeo that reports another manifest digest than the layout's is not believed.
    const fake = join(work, "fake-skopeo");
    mkdirSync(fake);
    writeFileSync(join(fake, "skopeo"), '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --digestfile ] && printf "sha256:%064d" 0 > "$2"; shift; done\n', { mode: 0o755 });
    await assert.rejects(publishWithPath(`${fake}:${process.env.PATH}`), (err: { stderr: string }) =>
      new RegExp(`skopeo pushed manifest sha256:0{64}, the layout has ${packaged[`${FILTER}/wasm`]}`).test(err.stderr),
    );

    const staleBuild = join(work, "build-stale");
    mkdirSync(staleBuild);
    writeFileSync(join(staleBuild, `${FILTER}.wasm`), Buffer.concat([wasm, Buffer.from([0, 2, 1, 0x78])]));
    await assert.rejects(npmRun("publish", [target, "--oci-dir", layoutDir, "--build-dir", staleBuild], { DOCKER_CONFIG: dockerDir }), /changed after it was packaged/);
  });

  describe("Envoy loading the module from the registry's blob URL", () => {
    let mirror: LocalRegistry;
    let mock: MockLlm;
    let moduleDigest: string;

    before(async () => {
      mirror = await startLocalRegistry({ storageDir: storage, workDir: join(work, "mirror"), readOnly: true });
      running.push(mirror);
      mock = await startMockLlm({ name: "oci-upstream" });
      running.push({ stop: () => mock.close() });
      moduleDigest = sha256Digest(wasm);
    });

    const vars = (registryPort: number, sha256: string) => ({
      REGISTRY_PORT: registryPort,
      UPSTREAM_PORT: mock.port,
      REPOSITORY: `${REPOSITORY}/${FILTER}`,
      WASM_DIGEST: moduleDigest,
      WASM_SHA256: sha256,
      ROOT_ID,
      PLUGIN_CONFIG: "{}",
    });

    async function withEnvoy(registryPort: number, sha256: string, fn: (envoy: EnvoyHandle) => Promise<void>): Promise<void> {
      const envoy = await startEnvoy({ scenario: "remote-wasm", vars: vars(registryPort, sha256), concurrency: 1 });
      try {
        await fn(envoy);
      } catch (err) {
        process.stderr.write(`\n--- envoy log tail (${envoy.logPath}) ---\n${tail(envoy.log())}\n--- end ---\n`);
        throw err;
      } finally {
        await envoy.stop();
      }
      if (!process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
    }

    const chat = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hi" }], max_tokens: 3 };

    test("envoy/remote-wasm.yaml passes envoy --mode validate, with its example values and with real ones", async () => {
      const template = readFileSync(join(repoDir, "envoy", "remote-wasm.yaml"), "utf8");
      const examples = Object.fromEntries([...template.matchAll(/^# example \{\{(\w+)\}\}: (.*)$/gm)].map((m) => [m[1], m[2].trim()]));
      assert.deepEqual(Object.keys(examples).sort(), ["PLUGIN_CONFIG", "REPOSITORY", "ROOT_ID", "WASM_DIGEST", "WASM_SHA256"]);
      for (const v of [examples, vars(mirror.port, moduleDigest.slice(7))]) {
        const { ok, output } = await validateScenario("remote-wasm", v);
        assert.ok(ok, output);
      }
    });

    test("with the module's sha256, Envoy loads the filter and it serves traffic", async () => {
      await withEnvoy(mirror.port, moduleDigest.slice(7), async (envoy) => {
        mock.reset();
        await logShows(mirror.log, new RegExp(`"GET /v2/${REPOSITORY}/${FILTER}/blobs/${moduleDigest} HTTP/1\\.1" 200 ${wasm.length} `));
        assert.doesNotMatch(envoy.log(), /failed to load/);
        const ok = await postJson(envoy.url("/v1/chat/completions"), chat);
        assert.equal(ok.status, 200, ok.text);
        assert.equal(ok.headers["x-mock-served-by"], "oci-upstream");
        // Proof the filter runs: the admission filter answers a broken body itself.
        const broken = await postJson(envoy.url("/v1/chat/completions"), '{"model":"gpt-4o","messages":[');
        assert.equal(broken.status, 400, broken.text);
        assert.match(broken.json.error.message, /not valid JSON/);
        assert.equal(mock.requests.length, 1);
      });
    });

    test("a wrong sha256 is refused: the plugin fails to load and the listener fails closed with 503", async () => {
      // The classic mix-up: pinning the image's manifest digest (what Istio's WasmPlugin.sha256
      // wants) where Envoy wants the module's own hash.
      const manifestHex = packaged[`${FILTER}/wasm`].slice(7);
      await withEnvoy(mirror.port, manifestHex, async (envoy) => {
        mock.reset();
        await envoy.waitForLog(/Plugin remote-wasm failed to load/);
        // Envoy did get the bytes (200) and rejected them itself.
        await logShows(mirror.log, new RegExp(`"GET /v2/${REPOSITORY}/${FILTER}/blobs/${moduleDigest} HTTP/1\\.1" 200 `));
        const res = await postJson(envoy.url("/v1/chat/completions"), chat);
        assert.equal(res.status, 503);
        assert.equal(mock.requests.length, 0);
      });
    });

    test("the authenticated registry refuses Envoy's anonymous fetch, so the plugin fails to load", async () => {
      await withEnvoy(registry.port, moduleDigest.slice(7), async (envoy) => {
        mock.reset();
        await envoy.waitForLog(/Plugin remote-wasm failed to load/);
        await logShows(registry.log, new RegExp(`"GET /v2/${REPOSITORY}/${FILTER}/blobs/${moduleDigest} HTTP/1\\.1" 401 `));
        assert.equal((await postJson(envoy.url("/v1/chat/completions"), chat)).status, 503);
        assert.equal(mock.requests.length, 0);
      });
    });
  });
});
