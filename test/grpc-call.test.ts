// The proxy-wasm gRPC path of assembly/host/ with the real Envoy and the real rate limit service: a
// test-only filter (test/grpc-call/probe.ts, compiled here) sends ShouldRateLimit through an Envoy
// cluster and answers each request with what came back. Envoy 1.40 passes the root's context id to
// proxy_on_grpc_receive/_close whichever context made the call (seen with this probe while writing
// assembly/host/); what the tests hold: a stream's call is still answered to that stream (abi.ts
// dispatches by token), a call outlives the stream that made it, and a failed or timed-out call
// closes with status 14 within the timeout.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, startEnvoy, tail } from "../tooling/envoy.ts";
import { counterKey, type RateLimitService, type Redis, startRateLimitService, startRedis } from "../tooling/ratelimit.ts";

const DOMAIN = "llm-mesh-test";
const TIMEOUT_MS = 400;

describe("gRPC calls from a Wasm filter to the rate limit service", () => {
  const scratch = join(repoDir, ".tmp", `grpc-call-${process.pid}`);
  let redis: Redis;
  let service: RateLimitService;
  let silent: Server;
  const silentSockets = new Set<Socket>();
  let envoy: EnvoyHandle;

  before(async () => {
    mkdirSync(scratch, { recursive: true });
    const probe = join(scratch, "probe.wasm");
    execFileSync(join(repoDir, "node_modules", ".bin", "asc"), ["test/grpc-call/probe.ts", "--config", "asconfig.json", "--target", "release", "--outFile", probe], { cwd: repoDir, stdio: "inherit" });
    redis = await startRedis({ workDir: join(scratch, "redis") });
    service = await startRateLimitService({ redis, domain: DOMAIN, workDir: join(scratch, "ratelimit") });
    // Accepts connections and never says a word: a service that hangs.
    silent = createServer((socket) => silentSockets.add(socket));
    await new Promise<void>((ok) => silent.listen(0, "127.0.0.1", () => ok()));
    const filters = [
      {
        name: "grpc-probe",
        typed_config: {
          "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
          config: {
            root_id: "grpc-probe",
            configuration: { "@type": "type.googleapis.com/google.protobuf.StringValue", value: JSON.stringify({ cluster: "ratelimit", domain: DOMAIN, timeout_ms: TIMEOUT_MS }) },
            vm_config: { runtime: "envoy.wasm.runtime.v8", code: { local: { filename: probe } } },
          },
        },
      },
      { name: "envoy.filters.http.router", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
    ];
    envoy = await startEnvoy({
      scenario: "grpc-call",
      concurrency: 1,
      componentLogLevel: "wasm:info",
      vars: { HTTP_FILTERS: JSON.stringify(filters), RLS_PORT: service.grpcPort, SILENT_PORT: (silent.address() as { port: number }).port },
    });
  });

  after(async () => {
    await envoy?.stop();
    await service?.stop();
    await redis?.stop();
    for (const s of silentSockets) s.destroy();
    silent?.close();
    if (process.env.KEEP_TMP) return;
    rmSync(scratch, { recursive: true, force: true });
    if (envoy) rmSync(envoy.tmpDir, { recursive: true, force: true });
  });

  const ask = async (headers: Record<string, string>) => {
    const started = Date.now();
    const res = await fetch(envoy.url("/"), { headers, signal: AbortSignal.timeout(5000) });
    return { status: res.status, text: await res.text(), ms: Date.now() - started };
  };
  const minuteStart = () => Math.floor(Date.now() / 60_000) * 60;

  test("a stream's call is answered to that stream, which can answer its request", async (t) => {
    try {
      const first = await ask({ "x-tenant": "a", "x-hits": "4", "x-limit": "10" });
      assert.equal(first.status, 200, first.text);
      const ok = JSON.parse(first.text);
      assert.equal(ok.valid, true);
      assert.equal(ok.overall, 1);
      assert.deepEqual({ ...ok.statuses[0], reset: 0 }, { code: 1, has_limit: true, limit: 10, unit: 2, remaining: 6, reset: 0 });
      assert.ok(ok.statuses[0].reset >= 1 && ok.statuses[0].reset <= 60);

      const second = await ask({ "x-tenant": "a", "x-hits": "7", "x-limit": "10" });
      assert.equal(second.status, 429, second.text);
      assert.equal(JSON.parse(second.text).statuses[0].code, 2);
      assert.equal(await redis.counter(counterKey(DOMAIN, [["tenant", "a"]], minuteStart())), 11);
    } catch (err) {
      t.diagnostic(tail(envoy.log(), 40));
      throw err;
    }
  });

  test("a root's call outlives the request that started it and is answered to the root", async () => {
    const from = envoy.log().length;
    const res = await ask({ "x-tenant": "b", "x-hits": "3", "x-caller": "root" });
    assert.equal(res.status, 200);
    assert.equal(res.text, "passed");
    const [line] = await envoy.waitForLog(/grpc-probe\[\d+\]: root answer \d+: (.*)/, 5000, from);
    const answer = JSON.parse(line.slice(line.indexOf("{")));
    assert.equal(answer.statuses[0].remaining, 7);
    assert.equal(await redis.counter(counterKey(DOMAIN, [["tenant", "b"]], minuteStart())), 3);
  });

  test("a service that does not answer closes the call with status 14 at the timeout", async () => {
    const res = await ask({ "x-tenant": "c", "x-cluster": "silent" });
    assert.equal(res.status, 503, res.text);
    const failed = JSON.parse(res.text);
    assert.equal(failed.grpc_status, 14);
    assert.match(failed.message, /timeout/);
    assert.ok(res.ms >= TIMEOUT_MS - 50 && res.ms < TIMEOUT_MS + 500, `${res.ms} ms`);
  });

  test("a request that ends before its call's answer leaves the filter working", async () => {
    const from = envoy.log().length;
    const abort = new AbortController();
    const gone = fetch(envoy.url("/"), { headers: { "x-tenant": "d", "x-cluster": "silent" }, signal: abort.signal }).catch(() => "aborted");
    await envoy.waitForLog(/grpc-probe\[\d+\]: call \d+ from stream/, 5000, from);
    abort.abort();
    assert.equal(await gone, "aborted");
    // The answer (a close at the timeout) comes for a stream Envoy has deleted.
    await new Promise((r) => setTimeout(r, TIMEOUT_MS + 300));
    const next = await ask({ "x-tenant": "d", "x-limit": "10" });
    assert.equal(next.status, 200, next.text);
    assert.doesNotMatch(envoy.log().slice(from), /wasm_fail_stream|Function: proxy_on_grpc_close failed|\[critical\]/);
  });

  test("an error of the service closes the call with the service's status and message", async () => {
    const res = await ask({ "x-tenant": "e", "x-domain": "" });
    assert.equal(res.status, 503, res.text);
    // Envoy appends its response details in braces to the service's grpc-message.
    assert.deepEqual(JSON.parse(res.text), { grpc_status: 2, message: "rate limit domain must not be empty{via_upstream}" });
  });

  test("a cluster Envoy lacks is refused when the call starts", async () => {
    const res = await ask({ "x-tenant": "e", "x-cluster": "no-such-cluster" });
    assert.equal(res.status, 500);
    assert.deepEqual(JSON.parse(res.text), { result: -10 });
  });

  // Last: it stops the service.
  test("a stopped service closes the call with status 14 at once", async () => {
    await service.stop();
    const res = await ask({ "x-tenant": "f" });
    assert.equal(res.status, 503, res.text);
    assert.equal(JSON.parse(res.text).grpc_status, 14);
    assert.ok(res.ms < TIMEOUT_MS, `${res.ms} ms`);
  });
});
