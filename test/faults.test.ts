// Faults around the llm-mesh chain in the real Envoy (envoy/faults.yaml): upstream errors,
// timeouts and resets, clients that leave mid-stream, mid-upstream or while queued. Afterwards
// nothing may stay counted, reserved or paused. Then each filter's VM is made to fail (a copy of
// its module traps on a poison request) and must fail as its failure_policy says.
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type EnvoyHandle, startEnvoy } from "../tooling/envoy.ts";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { settledStat, settlesAt, stat, statSettlesAt, waitForStat } from "../tooling/stats.ts";
import { ADMISSION_CONFIG, IN_FLIGHT_STATS, METRICS_CONFIG, MESH_VARS, ROUTER_CONFIG, settledInFlight } from "../tooling/fuzz/mesh.ts";
import { Connection, type RawResponse } from "./fuzz/raw-client.ts";
import { simpleChat } from "./fuzz/requests.ts";
import { faultyBuild, type Filter } from "./fuzz/vm-failure.ts";

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));
/** How long llm-throttle counts a place its VM no longer renews (HOLD_LEASE_MS in assembly/throttle/policy.ts). */
const HOLD_LEASE_MS = 4000;

const THROTTLE_CONFIG = {
  rules: [
    {
      name: "queued",
      match: { headers: [{ name: "x-tenant", exact: "q" }] },
      key: ["global"],
      limits: { max_in_flight: 1 },
      action: "queue",
      queue: { max_wait_ms: 20000, max_length: 10 },
    },
    { name: "tenants", key: ["header:x-tenant"], limits: { tokens_per_minute: 1_000_000_000, max_in_flight: 1000 }, action: "reject" },
  ],
};

function requestBytes(path: string, body: string, headers: Record<string, string> = {}): Buffer {
  const lines = Object.entries({ host: "llm.local", "content-type": "application/json", "x-tenant": "t", ...headers, "content-length": String(Buffer.byteLength(body)) });
  return Buffer.from(`POST ${path} HTTP/1.1\r\n${lines.map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n${body}`);
}

async function post(envoy: EnvoyHandle, body: string, headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<RawResponse> {
  const connection = new Connection(envoy.ports.LISTEN_PORT);
  try {
    const outcome = await connection.request([requestBytes("/v1/chat/completions", body, headers)], { timeoutMs });
    assert.ok("response" in outcome, `no answer: ${JSON.stringify(outcome)}`);
    return outcome.response;
  } finally {
    connection.destroy();
  }
}

/** Opens a request on its own socket; resolves once `until` matches what arrived (or at once). */
function openRequest(envoy: EnvoyHandle, bytes: Buffer, until?: RegExp): Promise<{ socket: Socket; received: () => string }> {
  return new Promise((resolve, reject) => {
    let text = "";
    const socket = connect({ port: envoy.ports.LISTEN_PORT, host: "127.0.0.1" }, () => {
      socket.write(bytes);
      if (!until) resolve({ socket, received: () => text });
    });
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
      if (until?.test(text)) resolve({ socket, received: () => text });
    });
    socket.on("error", reject);
  });
}

/** Reads everything a socket receives until the peer closes it. */
function readToClose(socket: Socket, start = ""): Promise<string> {
  return new Promise((resolve) => {
    let text = start;
    socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
    socket.on("close", () => resolve(text));
  });
}

describe("faults: nothing stays counted, reserved or paused", () => {
  let mock: MockLlm;
  let envoy: EnvoyHandle;
  before(async () => {
    mock = await startMockLlm({ name: "primary" });
    envoy = await startEnvoy({ scenario: "faults", vars: { ...MESH_VARS, UPSTREAM_PORT: mock.port, THROTTLE_CONFIG }, concurrency: 2 });
    // The gauges exist from the first request on; the settled checks below must see them.
    assert.equal((await post(envoy, simpleChat())).status, 200);
    const names = [...(await envoy.stats()).keys()];
    for (const gauge of ["in_flight", "waiting", "tokens_reserved", "active_requests"]) {
      assert.ok(names.some((n) => IN_FLIGHT_STATS.test(n) && n.includes(gauge)), `a ${gauge} gauge is exported`);
    }
  });
  after(async () => {
    await envoy?.stop();
    await mock?.close();
    if (envoy && !process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
  });

  test("upstream 5xx answers reach the client, cost nothing and release everything", async () => {
    const used = await settledStat(envoy, "wasmcustom.llm_throttle.tenants.tokens_used");
    for (const status of [500, 502, 503, 529]) {
      const res = await post(envoy, simpleChat("gpt-4o", { max_tokens: 50 }), { "x-mock-status": String(status) });
      assert.equal(res.status, status);
      assert.equal(res.headers["x-mock-served-by"], "primary");
    }
    await settledInFlight(envoy);
    // A failed answer is not billed.
    await statSettlesAt(envoy, "wasmcustom.llm_throttle.tenants.tokens_used", used);
  });

  test("a route timeout shorter than the model's latency: 504, and the reservation is refunded", async () => {
    const started = Date.now();
    const res = await post(envoy, simpleChat("gpt-4o", { max_tokens: 50 }), { "x-mock-latency-ms": "6000" });
    assert.equal(res.status, 504);
    assert.ok(Date.now() - started < 5000, "the route timeout (2 s) ended it, not the model");
    await settledInFlight(envoy);
  });

  test("an upstream reset before the response: 503, nothing held", async () => {
    const res = await post(envoy, simpleChat(), { "x-mock-reset-after": "0" });
    assert.equal(res.status, 503);
    assert.match(res.body.toString(), /reset|disconnect/);
    await settledInFlight(envoy);
  });

  test("an upstream reset mid-stream: the client gets the start, nothing held", async () => {
    const { socket, received } = await openRequest(
      envoy,
      requestBytes("/v1/chat/completions", simpleChat("gpt-4o", { stream: true, max_tokens: 40 }), { "x-mock-reset-after": "3", "x-mock-chunk-delay-ms": "20", "x-mock-completion-tokens": "30" }),
    );
    const text = await readToClose(socket, received());
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /data: /);
    assert.doesNotMatch(text, /\[DONE\]/, "the stream was cut");
    await settledInFlight(envoy);
  });

  test("a client that leaves mid-stream", async () => {
    const { socket } = await openRequest(
      envoy,
      requestBytes("/v1/chat/completions", simpleChat("gpt-4o", { stream: true, max_tokens: 40 }), { "x-mock-chunk-delay-ms": "300", "x-mock-completion-tokens": "30" }),
      /data: /,
    );
    socket.destroy();
    await settledInFlight(envoy);
  });

  test("a client that leaves while the model works", async () => {
    mock.reset();
    const { socket } = await openRequest(envoy, requestBytes("/v1/chat/completions", simpleChat(), { "x-mock-latency-ms": "800" }));
    while (mock.requests.length === 0) await sleep(10);
    socket.destroy();
    await settledInFlight(envoy);
  });

  test("a client that leaves while admission holds its half-sent body", async () => {
    mock.reset();
    const body = simpleChat();
    const head = requestBytes("/v1/chat/completions", body).subarray(0, -body.length + 10);
    const { socket } = await openRequest(envoy, head);
    await sleep(200);
    socket.destroy();
    await settledInFlight(envoy);
    assert.equal(mock.requests.length, 0, "nothing went upstream");
  });

  test("a client that leaves while queued: its place is freed and the next request goes at once", async () => {
    mock.reset();
    const queued = "wasmcustom.llm_throttle.queued.waiting";
    // A holds the only slot for a while; B queues behind it, then leaves. Envoy's own count of
    // streams says B is there: the waiting gauge may take up to a flush period, longer than A.
    const first = post(envoy, simpleChat(), { "x-tenant": "q", "x-mock-latency-ms": "1500" });
    while (mock.requests.length === 0) await sleep(10);
    const { socket } = await openRequest(envoy, requestBytes("/v1/chat/completions", simpleChat("gpt-4o-mini"), { "x-tenant": "q" }));
    await waitForStat(envoy, "http.llm.downstream_rq_active", 2);
    socket.destroy();
    await statSettlesAt(envoy, queued, 0);
    assert.equal((await first).status, 200);
    // C finds the slot free: it is neither held by A nor queued behind B's ghost.
    const started = Date.now();
    const third = await post(envoy, simpleChat(), { "x-tenant": "q" });
    assert.equal(third.status, 200);
    assert.ok(Date.now() - started < 1000, `C waited ${Date.now() - started} ms`);
    assert.deepEqual(mock.requests.map((r) => (r.json as { model: string }).model), ["gpt-4o", "gpt-4o"], "B never reached the model");
    await settledInFlight(envoy);
  });

  test("after every fault: no stream left in Envoy and the limits still admit", async () => {
    await settledInFlight(envoy);
    assert.equal(await stat(envoy, "http.llm.downstream_rq_active"), 0);
    // One slot (max_in_flight 1) that no fault leaked: two requests in a row both pass at once.
    for (let i = 0; i < 2; i++) assert.equal((await post(envoy, simpleChat(), { "x-tenant": "q" }, 3000)).status, 200);
  });
});

// ---------------------------------------------------------------- VM failure

/** How each filter shows it ran on a request the upstream received. */
const RAN: Record<Filter, (headers: Record<string, unknown>, response: RawResponse) => boolean> = {
  admission: (headers) => headers["x-llm-model"] === "gpt-4o",
  throttle: (_headers, response) => response.headers["x-ratelimit-limit-tokens"] !== undefined,
  router: (headers) => headers["x-llm-route"] === "primary",
  metrics: () => true,
};

const POISON = Object.fromEntries(Array.from({ length: 45 }, (_, i) => [`x-poison-${i}`, "1"]));

describe("a filter whose VM fails fails as its failure_policy says", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());

  const start = (filter: Filter, dir: string) =>
    startEnvoy({
      scenario: "faults",
      vars: { ADMISSION_CONFIG, THROTTLE_CONFIG, METRICS_CONFIG, ROUTER_CONFIG, UPSTREAM_PORT: mock.port, BUILD_DIR: faultyBuild(join(repoDir, "build"), dir, filter, { requestHeadersAtLeast: 40 }) },
      // One worker: the failed VM is the one every later request meets.
      concurrency: 1,
    });

  for (const filter of ["admission", "throttle", "router"] as const) {
    test(`llm-${filter} (FAIL_RELOAD): 503 while its VM is down, never a request without it, then a new VM`, { timeout: 60_000 }, async () => {
      const dir = join(repoDir, ".tmp", `faults-vm-${filter}-${process.pid}`);
      const envoy = await start(filter, dir);
      try {
        mock.reset();
        const forged = { "x-llm-model": "forged", "x-llm-route": "canary" };
        const ok = await post(envoy, simpleChat(), forged);
        assert.equal(ok.status, 200);
        assert.ok(RAN[filter](mock.requests[0].headers, ok), "the filter ran before the fault");

        const poisoned = await post(envoy, simpleChat(), { ...forged, ...POISON });
        assert.equal(poisoned.status, 503);
        await envoy.waitForLog(/Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable/);

        // Until the new VM is up, requests fail closed; none reaches the model without the filter.
        const statuses: number[] = [];
        const deadline = Date.now() + 20_000;
        for (;;) {
          mock.reset();
          const res = await post(envoy, simpleChat(), forged);
          statuses.push(res.status);
          assert.ok(res.status === 200 || res.status === 503, `status ${res.status}`);
          if (res.status === 200) {
            assert.ok(RAN[filter](mock.requests[0].headers, res), "a request passed without the filter");
            break;
          }
          assert.equal(mock.requests.length, 0, "a request reached the model while the filter was down");
          assert.ok(Date.now() < deadline, `no new VM within 20 s (statuses ${statuses.join(",")})`);
          await sleep(100);
        }
        assert.ok((await stat(envoy, `wasm.llm-${filter}.vm_reload_success`)) >= 1, "Envoy counted the reload");
        assert.equal((await post(envoy, simpleChat(), forged)).status, 200);
      } finally {
        await envoy.stop();
        rmSync(dir, { recursive: true, force: true });
        if (!process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
      }
    });
  }

  test("llm-throttle: places held in flight or in a queue on a VM that failed come back within the lease", { timeout: 60_000 }, async () => {
    const dir = join(repoDir, ".tmp", `faults-vm-leak-${process.pid}`);
    // One slot and a queue of one: either place left held keeps every later request out.
    const oneSlot = {
      rules: [{ name: "one", match: { headers: [{ name: "x-tenant", exact: "q" }] }, key: ["global"], limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: 5000, max_length: 1 } }],
    };
    const envoy = await startEnvoy({
      scenario: "faults",
      vars: { ...MESH_VARS, THROTTLE_CONFIG: oneSlot, UPSTREAM_PORT: mock.port, BUILD_DIR: faultyBuild(join(repoDir, "build"), dir, "throttle", { requestHeadersAtLeast: 40 }) },
      concurrency: 1,
    });
    let queued: Socket | undefined;
    try {
      mock.reset();
      const holding = post(envoy, simpleChat(), { "x-tenant": "q", "x-mock-latency-ms": "1000" });
      while (mock.requests.length === 0) await sleep(10);
      queued = (await openRequest(envoy, requestBytes("/v1/chat/completions", simpleChat(), { "x-tenant": "q" }))).socket;
      // Envoy's own count of streams: the waiting gauge may show the queued one only after the holding one ended.
      await waitForStat(envoy, "http.llm.downstream_rq_active", 2);
      assert.equal((await post(envoy, simpleChat(), POISON)).status, 503);
      const failedAt = Date.now();
      await holding;
      queued.destroy();
      const deadline = Date.now() + 15_000;
      while ((await post(envoy, simpleChat(), { "x-tenant": "other" })).status !== 200) {
        assert.ok(Date.now() < deadline, "no new VM");
        await sleep(100);
      }
      // The failed VM renewed its holds last before it failed: they lapse within the lease (4 s).
      const lapsed = Math.max(failedAt + HOLD_LEASE_MS + 2000, Date.now() + 1000);
      const statuses: number[] = [];
      for (;;) {
        const status = (await post(envoy, simpleChat(), { "x-tenant": "q" })).status;
        statuses.push(status);
        if (status === 200 || Date.now() > lapsed) break;
        await sleep(100);
      }
      assert.equal(statuses.at(-1), 200, `the slot and the queue place are free again (statuses ${statuses.join(",")})`);
    } finally {
      queued?.destroy();
      await envoy.stop();
      rmSync(dir, { recursive: true, force: true });
      if (!process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
    }
  });

  test("llm-metrics (FAIL_OPEN): after its VM fails, requests are served without it", { timeout: 60_000 }, async () => {
    const dir = join(repoDir, ".tmp", `faults-vm-metrics-${process.pid}`);
    const envoy = await start("metrics", dir);
    const counted = async () => [...(await envoy.stats())].filter(([n]) => n.startsWith("wasmcustom.gen_ai_server_requests_total")).reduce((sum, [, v]) => sum + v, 0);
    try {
      assert.equal((await post(envoy, simpleChat())).status, 200);
      // Sent before the fault: counts still held in the VM when it fails are lost with it.
      await settlesAt(counted, 1, "the filter counted before the fault");
      const poisoned = await post(envoy, simpleChat(), POISON);
      assert.ok([200, 503].includes(poisoned.status), `the poisoned request itself: ${poisoned.status}`);
      await envoy.waitForLog(/Function: proxy_on_request_headers failed/);
      const before = await counted();
      for (let i = 0; i < 5; i++) assert.equal((await post(envoy, simpleChat())).status, 200);
      await settlesAt(counted, before, "the failed filter is skipped, not reloaded: its count");
      assert.equal(await stat(envoy, "wasm.llm-metrics.vm_reload"), 0);
    } finally {
      await envoy.stop();
      rmSync(dir, { recursive: true, force: true });
      if (!process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
    }
  });

  test("a filter that cannot start stops Envoy from starting, even under FAIL_OPEN", { timeout: 30_000 }, async () => {
    const dir = join(repoDir, ".tmp", `faults-vm-configure-${process.pid}`);
    let failure = "";
    try {
      await startEnvoy({
        scenario: "faults",
        vars: { ...MESH_VARS, UPSTREAM_PORT: mock.port, BUILD_DIR: faultyBuild(join(repoDir, "build"), dir, "metrics", { configure: true }) },
        concurrency: 1,
      }).then((envoy) => envoy.stop());
    } catch (err) {
      failure = (err as Error).message;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.match(failure, /Unable to create Wasm plugin llm-metrics/);
    const scratch = /log (\S+)\/envoy\.log/.exec(failure)?.[1];
    if (scratch && !process.env.KEEP_TMP) rmSync(scratch, { recursive: true, force: true });
  });
});
