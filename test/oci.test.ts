// Packaging and publishing filters as OCI images, against real tools only: Debian's
// docker-registry (CNCF distribution) with htpasswd Basic auth and, separately, with the Bearer
// token flow; skopeo as an independent reader of what we wrote and pushed; and the real Envoy
// fetching the module from the registry's blob endpoint.
//
// Envoy's remote data source sends no credentials, so Envoy is pointed at a second registry
// process: read-only and anonymous, over the same storage directory the authenticated registry
// wrote. The bytes Envoy loads are exactly the ones `npm run publish` pushed, and the registry that
// took the push still demands a password (checked below: Envoy fetching from it gets a 401).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { credentialsFor, parseChallenge } from "../scripts/oci/auth.ts";
import { sha256Digest } from "../scripts/oci/blob.ts";
import { ANNOTATION, MEDIA, parseManifest, PLUGIN_FILE } from "../scripts/oci/image.ts";
import { type LayoutImage, readLayout } from "../scripts/oci/layout.ts";
import { type LocalRegistry, registryBinary, startLocalRegistry } from "../tooling/local-registry.ts";
import { isLoopback, parseReference } from "../scripts/oci/reference.ts";
import { RegistryClient } from "../scripts/oci/registry.ts";
import { gunzip, untar } from "../scripts/oci/tar.ts";
import { opensslAvailable, startTokenServer, type TokenServer } from "../scripts/oci/token-server.ts";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, startEnvoy, tail, validateScenario } from "../tooling/envoy.ts";
import { postJson } from "../tooling/http.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";

const run = promisify(execFile);

const FILTER = "admission";
/** The root context the admission filter registers (FILTER_NAME in assembly/admission/filter.ts). */
const ROOT_ID = "llm-admission";
const MODULE = join(repoDir, "build", `${FILTER}.wasm`);
const USER = "mesh-ci";
const PASSWORD = "correct horse battery staple";
const REPOSITORY = "llm-mesh";
const TAG = "e2e";

const noModule = existsSync(MODULE) ? false : `${MODULE} is missing: run \`npm run build\` first`;
const noRegistry = registryBinary() ? false : "no docker-registry binary: apt-get install -y docker-registry";
const skipAll = noModule || noRegistry;

function skopeoAvailable(): boolean {
  return ["/usr/bin/skopeo", "/usr/local/bin/skopeo"].some(existsSync);
}

/** Runs one of the project's npm scripts the way a user does; returns stdout. */
async function npmRun(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  try {
    const { stdout } = await run("npm", ["run", "--silent", script, "--", ...args], { cwd: repoDir, env: { ...process.env, ...env }, encoding: "utf8" });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw Object.assign(new Error(`npm run ${script} failed: ${e.stderr || e.message}`), { stdout: e.stdout, stderr: e.stderr });
  }
}

/** "<filter> <kind> <digest> <dir>" lines of `npm run package`. */
function packagedDigests(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of stdout.matchAll(/^(\S+)\s+(wasm|compat)\s+(sha256:[0-9a-f]{64})\s/gm)) out[`${m[1]}/${m[2]}`] = m[3];
  return out;
}

/** "<filter> <kind> <reference>@<digest> ..." lines of `npm run publish`. */
function publishedImages(stdout: string): Record<string, { reference: string; digest: string; uploaded: number; present: number }> {
  const out: Record<string, { reference: string; digest: string; uploaded: number; present: number }> = {};
  for (const m of stdout.matchAll(/^(\S+)\s+(wasm|compat)\s+(\S+)@(sha256:[0-9a-f]{64})\s+\((\d+) blobs uploaded, (\d+) already there\)/gm)) {
    out[`${m[1]}/${m[2]}`] = { reference: m[3], digest: m[4], uploaded: Number(m[5]), present: Number(m[6]) };
  }
  return out;
}

function dockerConfig(dir: string, auths: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify({ auths, ...extra }));
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

describe("image references, challenges and docker config", () => {
  test("references need an explicit registry; loopback registries are plain http", () => {
    assert.deepEqual(parseReference("127.0.0.1:5000/llm-mesh:0.1.0"), { registry: "127.0.0.1:5000", repository: "llm-mesh", tag: "0.1.0", digest: undefined });
    assert.deepEqual(parseReference("ghcr.io/acme/llm-mesh"), { registry: "ghcr.io", repository: "acme/llm-mesh", tag: undefined, digest: undefined });
    assert.equal(parseReference(`localhost/x@sha256:${"a".repeat(64)}`).digest, `sha256:${"a".repeat(64)}`);
    assert.equal(parseReference("docker.io/nginx:1").repository, "library/nginx");
    assert.throws(() => parseReference("acme/llm-mesh:1"), /names no registry/);
    assert.throws(() => parseReference("ghcr.io/Acme/x:1"), /not a valid repository name/);
    assert.throws(() => parseReference("ghcr.io/acme/x:-bad"), /not a valid tag/);
    assert.ok(isLoopback("127.0.0.1:5000") && isLoopback("localhost") && isLoopback("[::1]:5000"));
    assert.ok(!isLoopback("registry.local:5000") && !isLoopback("10.0.0.1:5000"));
  });

  test("Bearer challenges keep commas inside quoted scopes", () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'), {
      scheme: "bearer",
      params: { realm: "https://auth.example/token", service: "registry.example", scope: "repository:a/b:pull,push" },
    });
    assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), { scheme: "basic", params: { realm: "Registry Realm" } });
    assert.equal(parseChallenge(null), undefined);
  });

  test("credentials come from auths (any key spelling) or a credential helper", (t) => {
    mkdirSync(join(repoDir, ".tmp"), { recursive: true });
    const dir = mkdtempSync(join(repoDir, ".tmp", "docker-config-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const config = join(dockerConfig(dir, {
      "https://reg.example:5000/v1/": basicAuth("ann", "pa:ss"),
      "other.example": { username: "bo", password: "pw" },
      "token.example": { auth: Buffer.from("x:").toString("base64"), identitytoken: "refresh-me" },
    }, { credHelpers: { "helped.example": "llmmeshtest" } }), "config.json");
    assert.deepEqual(credentialsFor("reg.example:5000", config), { kind: "basic", username: "ann", password: "pa:ss" });
    assert.deepEqual(credentialsFor("other.example", config), { kind: "basic", username: "bo", password: "pw" });
    assert.deepEqual(credentialsFor("token.example", config), { kind: "identity-token", username: "x", token: "refresh-me" });
    assert.equal(credentialsFor("nowhere.example", config), undefined);

    // A helper is a program on PATH speaking docker's credential-helper protocol on stdin/stdout.
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const helper = join(bin, "docker-credential-llmmeshtest");
    writeFileSync(helper, '#!/bin/sh\nread host\n[ "$1" = get ] && [ "$host" = helped.example ] && printf \'{"ServerURL":"%s","Username":"hu","Secret":"hs"}\' "$host"\n');
    chmodSync(helper, 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      assert.deepEqual(credentialsFor("helped.example", config), { kind: "basic", username: "hu", password: "hs" });
    } finally {
      process.env.PATH = path;
    }
  });
});

describe("OCI images of a filter", { skip: skipAll }, () => {
  let work: string;
  let buildDir: string;
  let layoutDir: string;
  let storage: string;
  let registry: LocalRegistry;
  let dockerDir: string;
  let wasm: Buffer;
  let images: LayoutImage[];
  let packaged: Record<string, string>;
  let published: ReturnType<typeof publishedImages>;
  const running: { stop(): Promise<void> }[] = [];

  before(async () => {
    mkdirSync(join(repoDir, ".tmp"), { recursive: true });
    work = mkdtempSync(join(repoDir, ".tmp", "oci-"));
    // A private build dir: the test packages exactly this module, whatever else build/ holds or
    // whoever rebuilds it meanwhile.
    buildDir = join(work, "build");
    mkdirSync(buildDir);
    copyFileSync(MODULE, join(buildDir, `${FILTER}.wasm`));
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

  test("npm run package writes both formats as an OCI layout, reproducibly", async () => {
    const head = await run("git", ["rev-parse", "HEAD"], { cwd: repoDir, encoding: "utf8" }).then((r) => r.stdout.trim(), () => "unknown");
    const first = await npmRun("package", ["--build-dir", buildDir, "--out-dir", layoutDir]);
    packaged = packagedDigests(first);
    assert.deepEqual(Object.keys(packaged).sort(), [`${FILTER}/compat`, `${FILTER}/wasm`], first);

    // Again into another dir: same digests, byte-identical layout.
    const again = join(work, "oci-again");
    assert.deepEqual(packagedDigests(await npmRun("package", ["--build-dir", buildDir, "--out-dir", again])), packaged);
    for (const file of ["index.json", "oci-layout"]) {
      assert.ok(readFileSync(join(layoutDir, FILTER, file)).equals(readFileSync(join(again, FILTER, file))), file);
    }
    images = readLayout(join(layoutDir, FILTER));
    const againImages = readLayout(join(again, FILTER));
    assert.deepEqual(againImages.map((i) => i.blobs.map((b) => b.descriptor.digest)), images.map((i) => i.blobs.map((b) => b.descriptor.digest)));
    assert.deepEqual(JSON.parse(readFileSync(join(layoutDir, FILTER, "oci-layout"), "utf8")), { imageLayoutVersion: "1.0.0" });

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
    const artifact = parseManifest(images.find((i) => i.kind === "wasm")!.manifest.bytes);
    assert.deepEqual(artifact.layers.map((l) => l.mediaType).sort(), [MEDIA.wasmContent, MEDIA.wasmConfig].sort());
    assert.equal(artifact.config.mediaType, MEDIA.wasmConfig);
    const moduleLayer = artifact.layers.find((l) => l.mediaType === MEDIA.wasmContent)!;
    assert.equal(moduleLayer.digest, sha256Digest(wasm));
    assert.equal(moduleLayer.size, wasm.length);
    const runtimeConfig = JSON.parse(images[0].blobs.find((b) => b.descriptor.digest === artifact.config.digest)!.bytes.toString());
    assert.equal(runtimeConfig.type, "envoy_proxy");
    assert.ok(runtimeConfig.abiVersions.some((v: string) => v.startsWith("proxy_abi_version_0_2")), JSON.stringify(runtimeConfig));

    // The compat image: its last layer is tar+gzip holding plugin.wasm, with nothing from the build machine.
    const compatImage = images.find((i) => i.kind === "compat")!;
    const compat = parseManifest(compatImage.manifest.bytes);
    assert.equal(compat.annotations?.[ANNOTATION.variant], "compat");
    const last = compat.layers.at(-1)!;
    assert.equal(last.mediaType, MEDIA.ociLayerGzip);
    const gz = compatImage.blobs.find((b) => b.descriptor.digest === last.digest)!.bytes;
    assert.deepEqual([...gz.subarray(0, 4)], [0x1f, 0x8b, 8, 0], "gzip with no FNAME/FEXTRA flags");
    assert.equal(gz.readUInt32LE(4), 0, "gzip mtime is zero");
    const archive = gunzip(gz);
    assert.deepEqual([...untar(archive).keys()], [PLUGIN_FILE]);
    assert.ok(untar(archive).get(PLUGIN_FILE)!.equals(wasm));
    const header = archive.subarray(0, 512).toString("latin1");
    assert.equal(header.slice(100, 107), "0000644", "mode");
    assert.equal(header.slice(108, 115) + header.slice(116, 123), "00000000000000", "uid and gid");
    assert.equal(header.slice(136, 147), "0".repeat(11), "mtime");
    const imageConfig = JSON.parse(compatImage.blobs.find((b) => b.descriptor.digest === compat.config.digest)!.bytes.toString());
    assert.deepEqual(imageConfig.rootfs, { type: "layers", diff_ids: [sha256Digest(archive)] });

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

  test("npm run publish pushes both images with Basic auth; skips blobs already there", async () => {
    const target = `${registry.host}/${REPOSITORY}:${TAG}`;
    const stdout = await npmRun("publish", [target, "--oci-dir", layoutDir, "--build-dir", buildDir], { DOCKER_CONFIG: dockerDir });
    published = publishedImages(stdout);
    assert.deepEqual(published[`${FILTER}/wasm`], { reference: `${registry.host}/${REPOSITORY}/${FILTER}:${TAG}`, digest: packaged[`${FILTER}/wasm`], uploaded: 2, present: 0 }, stdout);
    assert.deepEqual(published[`${FILTER}/compat`], { reference: `${registry.host}/${REPOSITORY}/${FILTER}:${TAG}-compat`, digest: packaged[`${FILTER}/compat`], uploaded: 2, present: 0 }, stdout);

    const again = publishedImages(await npmRun("publish", [target, "--oci-dir", layoutDir, "--build-dir", buildDir], { DOCKER_CONFIG: dockerDir }));
    assert.equal(again[`${FILTER}/wasm`].uploaded, 0);
    assert.equal(again[`${FILTER}/wasm`].present, 2);
    assert.equal(again[`${FILTER}/compat`].digest, packaged[`${FILTER}/compat`]);
    await logShows(registry.log, /"POST \/v2\/llm-mesh\/admission\/blobs\/uploads\/ HTTP\/1\.1" 202/);
    await logShows(registry.log, /"PUT \/v2\/llm-mesh\/admission\/blobs\/uploads\/[^ ]*digest=sha256%3A[0-9a-f]{64} HTTP\/1\.1" 201/);
    await logShows(registry.log, /"PUT \/v2\/llm-mesh\/admission\/manifests\/e2e-compat HTTP\/1\.1" 201/);
  });

  test("publish fails clearly on a wrong password, no credentials, or a module newer than its layout", async () => {
    const target = `${registry.host}/${REPOSITORY}:wrong`;
    const args = [target, "--oci-dir", layoutDir, "--build-dir", buildDir];
    const wrong = dockerConfig(join(work, "docker-wrong"), { [`http://${registry.host}`]: basicAuth(USER, "nope") });
    await assert.rejects(npmRun("publish", args, { DOCKER_CONFIG: wrong }), /rejected the credentials from the docker config \(HTTP 401/);
    const none = dockerConfig(join(work, "docker-none"), {});
    await assert.rejects(npmRun("publish", args, { DOCKER_CONFIG: none }), /wants a user name and password and none were found/);

    const staleBuild = join(work, "build-stale");
    mkdirSync(staleBuild);
    writeFileSync(join(staleBuild, `${FILTER}.wasm`), Buffer.concat([wasm, Buffer.from([0, 2, 1, 0x78])]));
    await assert.rejects(npmRun("publish", [target, "--oci-dir", layoutDir, "--build-dir", staleBuild], { DOCKER_CONFIG: dockerDir }), /changed after it was packaged/);
  });

  test("pulled back by tag and by digest, manifests and blobs match byte for byte", async () => {
    const repo = `${REPOSITORY}/${FILTER}`;
    const anonymous = new RegistryClient(registry.host);
    await assert.rejects(anonymous.getManifest(repo, TAG), /wants a user name and password/);

    const client = new RegistryClient(registry.host, { credentials: credentialsFor(registry.host, join(dockerDir, "config.json")) });
    for (const image of images) {
      const tag = image.kind === "wasm" ? TAG : `${TAG}-compat`;
      for (const reference of [tag, image.manifest.descriptor.digest]) {
        const pulled = await client.getManifest(repo, reference);
        assert.equal(pulled.mediaType, MEDIA.ociManifest);
        assert.equal(pulled.digest, published[`${FILTER}/${image.kind}`].digest);
        assert.ok(pulled.bytes.equals(image.manifest.bytes), `${image.kind} manifest by ${reference}`);
      }
      for (const blob of image.blobs) assert.ok((await client.getBlob(repo, blob.descriptor.digest)).equals(blob.bytes));
    }
    const moduleLayer = parseManifest(images.find((i) => i.kind === "wasm")!.manifest.bytes).layers.find((l) => l.mediaType === MEDIA.wasmContent)!;
    assert.ok((await client.getBlob(repo, moduleLayer.digest)).equals(wasm));
  });

  test("skopeo reads the layout and the pushed images with the same digests", { skip: skopeoAvailable() ? false : "skopeo not installed (apt-get install -y skopeo)" }, async () => {
    const creds = `${USER}:${PASSWORD}`;
    for (const image of images) {
      const tag = image.kind === "wasm" ? TAG : `${TAG}-compat`;
      const raw = await run("skopeo", ["inspect", "--raw", "--tls-verify=false", "--creds", creds, `docker://${registry.host}/${REPOSITORY}/${FILTER}:${tag}`], { encoding: "buffer" });
      assert.ok(Buffer.from(raw.stdout).equals(image.manifest.bytes), `skopeo inspect ${tag}`);
      const copy = join(work, `skopeo-${image.kind}`);
      await run("skopeo", ["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--src-creds", creds, `docker://${registry.host}/${REPOSITORY}/${FILTER}:${tag}`, `oci:${copy}:${image.kind}`]);
      assert.equal(JSON.parse(readFileSync(join(copy, "index.json"), "utf8")).manifests[0].digest, image.manifest.descriptor.digest);
      const local = await run("skopeo", ["inspect", "--raw", `oci:${join(layoutDir, FILTER)}:${image.kind}`], { encoding: "buffer" });
      assert.ok(Buffer.from(local.stdout).equals(image.manifest.bytes), `skopeo reads the layout's ${image.kind} entry`);
    }
  });

  test("npm run publish speaks the Bearer token flow", { skip: opensslAvailable() ? false : "openssl not installed" }, async () => {
    const tokenWork = join(work, "token");
    mkdirSync(tokenWork);
    const tokens: TokenServer = await startTokenServer({ workDir: tokenWork, users: { [USER]: PASSWORD } });
    running.push(tokens);
    const bearer = await startLocalRegistry({
      storageDir: join(work, "token-storage"),
      workDir: tokenWork,
      auth: { kind: "token", realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certPath },
    });
    running.push(bearer);
    const challenge = parseChallenge((await fetch(`${bearer.url}/v2/${REPOSITORY}/${FILTER}/manifests/${TAG}`)).headers.get("www-authenticate"));
    assert.equal(challenge?.scheme, "bearer");

    const config = dockerConfig(join(tokenWork, "docker"), { [bearer.host]: basicAuth(USER, PASSWORD) });
    const stdout = await npmRun("publish", [`${bearer.host}/${REPOSITORY}:${TAG}`, "--oci-dir", layoutDir, "--build-dir", buildDir], { DOCKER_CONFIG: config });
    const pushed = publishedImages(stdout);
    assert.equal(pushed[`${FILTER}/wasm`].digest, packaged[`${FILTER}/wasm`], stdout);
    assert.equal(pushed[`${FILTER}/compat`].digest, packaged[`${FILTER}/compat`], stdout);
    // One token for the repository's push scope served every request of the push.
    assert.deepEqual(tokens.requests, [{ user: USER, service: tokens.service, scopes: [`repository:${REPOSITORY}/${FILTER}:pull,push`] }]);

    const client = new RegistryClient(bearer.host, { credentials: credentialsFor(bearer.host, join(config, "config.json")) });
    const pulled = await client.getManifest(`${REPOSITORY}/${FILTER}`, packaged[`${FILTER}/wasm`]);
    assert.ok(pulled.bytes.equals(images.find((i) => i.kind === "wasm")!.manifest.bytes));
    // Anonymous callers get a token without rights, which the registry then refuses.
    await assert.rejects(new RegistryClient(bearer.host).getManifest(`${REPOSITORY}/${FILTER}`, TAG), /needs credentials/);
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
