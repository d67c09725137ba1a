// The one module (build/mesh.wasm) in the in-memory host (tooling/in-memory-host.ts): the order its
// stages see a request in, as assembly/mesh/filter.ts documents it. Admission answers before
// throttle counts anything, throttle answers before the router routes or rewrites, metrics records
// every request however it ended, and a request throttle queued goes through the later stages only
// once a tick releases it. No Envoy: test/mesh.test.ts runs the same module in the real one.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { builtModule, headerValue, InMemoryHost, jsonRequest, type Root, type Stream } from "../tooling/in-memory-host.ts";

const MODEL = "gpt-4o-mini";
const CANARY_MODEL = "gpt-4o-mini-canary";

/** The sections as the demo configures them (envoy/plugin-config/), cut down to what the tests use. */
const sections = {
  admission: { hold_headers: true, models: { default: { max_body_bytes: 4096 }, [MODEL]: {} }, unknown_model: "reject" },
  throttle: { rules: [{ name: "per-tenant", key: ["header:x-tenant"], limits: { requests_per_second: 1, tokens_per_minute: 100000 } }] },
  metrics: { models: [MODEL], tenant_header: "x-tenant" },
  router: { targets: { primary: {}, canary: { rewrite_model: CANARY_MODEL } }, rules: [{ name: "all-canary", weights: { canary: 100 } }] },
};

const chat = (tenant: string, body: object = {}) =>
  jsonRequest({ model: MODEL, messages: [{ role: "user", content: "Say hello to the mesh." }], max_tokens: 8, ...body }, { "x-tenant": tenant });

const answer = (prompt: number, completion: number) => ({
  body: JSON.stringify({
    id: "chatcmpl-1", object: "chat.completion", model: MODEL,
    choices: [{ index: 0, message: { role: "assistant", content: "Hello, mesh." }, finish_reason: "stop" }],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
  }),
});

async function mesh(config: object = sections): Promise<{ host: InMemoryHost; root: Root }> {
  const host = new InMemoryHost();
  const worker = await host.startWorker(builtModule("mesh"));
  return { host, root: worker.configure(config) };
}

/** Requests metrics counted with this outcome, over every other label. */
function counted(host: InMemoryHost, outcome: string): number {
  return [...host.metrics].filter(([name]) => name.startsWith("gen_ai_server_requests_total") && name.includes(`llm_outcome=.=${outcome};`)).reduce((sum, [, m]) => sum + m.value, 0);
}

const throttleRecords = (host: InMemoryHost) => host.sharedData.keys().filter((key) => key.startsWith("llm-throttle"));

function assertNotRouted(stream: Stream): void {
  assert.equal(stream.header("x-llm-route"), undefined);
  assert.equal(stream.filterState.get("llm_mesh.router"), undefined);
  assert.deepEqual(stream.events.filter((e) => e.kind === "clear-route-cache" || e.kind === "set-body"), []);
}

describe("the one module's stages, in memory", () => {
  for (const [order, config] of [["in configuration order", sections], ["with the sections listed backwards", Object.fromEntries(Object.entries(sections).reverse())]] as const) {
    test(`admission's 413 and 400 come before throttle counts anything (${order})`, async () => {
      const { host, root } = await mesh(config);
      const big = chat("acme", { messages: [{ role: "user", content: "x".repeat(5000) }] });
      const refused = [
        root.send(big),
        // No content-length: the size is found as the body arrives.
        root.send({ headers: big.headers.filter(([name]) => name !== "content-length"), body: big.body }),
        root.send(chat("acme", { model: "gpt-9" })),
        root.send({ ...chat("acme"), body: '{"model": "gpt-4o-mini", "messages": [' }),
      ];
      assert.deepEqual(refused.map((s) => s.state), ["answered 413", "answered 413", "answered 400", "answered 400"]);
      assert.deepEqual(refused.map((s) => JSON.parse(s.localResponse!.body).error.code), ["request_too_large", "request_too_large", "model_not_found", "invalid_request_body"]);
      for (const stream of refused) {
        assert.match(stream.localResponse!.details, /^llm-admission_/);
        assert.equal(stream.headersForwarded, false);
        assert.equal(stream.filterState.get("llm_mesh.throttle"), undefined);
        // Set as admission answers: the trace span ends before metrics' onLog could set it.
        assert.equal(stream.filterState.get("llm_mesh.outcome"), "rejected");
        assertNotRouted(stream);
        stream.answer();
      }
      assert.deepEqual(throttleRecords(host), []);
      // The tenant's one request per second is still there to take, and only one.
      const first = root.send(chat("acme"));
      assert.equal(first.state, "forwarded");
      assert.equal(root.send(chat("acme")).state, "answered 429");
      // Throttle counted only those two.
      host.advancePastMetricFlush();
      assert.deepEqual([host.metric("llm_throttle.per-tenant.admitted"), host.metric("llm_throttle.per-tenant.rejected")], [1, 1]);
      assert.equal(counted(host, "rejected"), 4);
    });
  }

  test("throttle's 429 comes before the router routes or rewrites the model", async () => {
    const { host, root } = await mesh();
    const admitted = root.send(chat("acme"));
    assert.equal(admitted.state, "forwarded");
    assert.equal(admitted.header("x-llm-route"), "canary");
    assert.equal(JSON.parse(admitted.forwardedBody()).model, CANARY_MODEL);
    assert.equal(admitted.filterState.get("llm_mesh.throttle"), "admitted");
    admitted.answer(answer(11, 4));
    assert.equal(admitted.responseHeader("x-ratelimit-remaining-requests"), "0");

    const refused = root.send(chat("acme"));
    assert.equal(refused.state, "answered 429");
    assert.match(headerValue(refused.localResponse!.headers, "retry-after") ?? "", /^[1-9]\d*$/);
    assert.equal(refused.filterState.get("llm_mesh.throttle"), "rejected:per-tenant");
    assert.equal(refused.filterState.get("llm_mesh.outcome"), "throttled", "set as throttle answers, before the stream ends");
    assertNotRouted(refused);
    host.advancePastMetricFlush();
    assert.equal(host.metric("llm_router_requests_totalllm_target=.=canary;.;"), 1);
    // Another tenant's budget is its own.
    assert.equal(root.send(chat("globex")).state, "forwarded");
  });

  test("metrics records every request's outcome and hands the answer's usage to throttle", async () => {
    const { host, root } = await mesh();
    const served = root.send(chat("acme")).answer(answer(11, 4));
    root.send(chat("acme")).answer();
    root.send(chat("acme", { model: "gpt-9" })).answer();
    assert.equal(served.filterState.get("llm_mesh.outcome"), "admitted");
    assert.equal(served.filterState.get("llm_mesh.usage_prompt_tokens"), "11");
    assert.equal(served.filterState.get("llm_mesh.usage_completion_tokens"), "4");
    assert.equal(served.filterState.get("llm_mesh.usage_source"), "upstream");
    host.advancePastMetricFlush();
    assert.deepEqual(["admitted", "throttled", "rejected"].map((outcome) => counted(host, outcome)), [1, 1, 1]);
    // The response goes through the stages backwards: metrics reads the usage, throttle settles with it.
    assert.equal(host.metric("llm_throttle.per-tenant.tokens_used"), 15);
    assert.equal(host.metric("llm_throttle.per-tenant.in_flight"), 0);
  });

  test("held request headers are read from the host once, and only for their own stream", async () => {
    const host = new InMemoryHost();
    const worker = await host.startWorker(builtModule("mesh"));
    const root = worker.configure(sections);
    const a = root.stream(chat("tenant-a"));
    const b = root.stream(chat("tenant-b"));
    worker.hostCalls.clear();
    a.sendRequestHeaders(false);
    assert.equal(a.state, "held");
    // b's callback comes between a's headers and a's body: a's stages must still read a's headers.
    b.sendRequestHeaders(false);
    a.sendRequestBody(chat("tenant-a").body, true);
    b.sendRequestBody(chat("tenant-b").body, true);
    assert.deepEqual([a.state, b.state], ["forwarded", "forwarded"], "one request per tenant: each counted under its own tenant");
    // With no other stream in between, the body's callback reads the headers its headers' callback read.
    worker.hostCalls.clear();
    const c = root.stream(chat("tenant-c"));
    c.sendRequestHeaders(false);
    c.sendRequestBody(chat("tenant-c").body, true);
    assert.equal(c.state, "forwarded");
    assert.equal(worker.hostCalls.get("proxy_get_header_map_pairs"), 1);
  });

  test("a lean request answered whole: no filter state handed over, no property read but the start, one clock read as it ends", async () => {
    const off = { filter_state: false };
    const lean = { admission: { ...sections.admission, ...off }, throttle: { ...sections.throttle, ...off }, metrics: { ...sections.metrics, records: false }, router: { ...sections.router, ...off } };
    const { host, root } = await mesh(lean);
    const worker = host.workers[0];
    worker.hostCalls.clear();
    const stream = root.send(chat("acme"));
    assert.equal(stream.state, "forwarded");
    assert.equal(stream.header("x-llm-route"), "canary");
    stream.answer(answer(10, 5));
    // Stages shared the facts, the decisions and the answer's status in memory: the one property
    // read is metrics' request.time (no response.code, code_details or llm_mesh.route), and routing
    // needs no clear_route_cache call.
    assert.equal(worker.hostCalls.get("proxy_set_property") ?? 0, 0);
    assert.equal(worker.hostCalls.get("proxy_get_property"), 1);
    assert.equal(worker.hostCalls.get("proxy_call_foreign_function") ?? 0, 0);
    assert.equal(stream.filterState.size, 0);
    const refused = root.send(chat("acme", { model: "gpt-9" }));
    assert.equal(refused.state, "answered 400");
    assert.equal(refused.filterState.size, 0, "no outcome handed over for a refusal either");
    refused.answer();
    host.advancePastMetricFlush();
    assert.equal(counted(host, "admitted"), 1);
    assert.equal(host.metric("llm_throttle.per-tenant.tokens_used"), 15);
    // proxy_on_done settles the throttle with the clock proxy_on_log read just before it.
    const next = root.send(chat("other"));
    next.sendResponseHeaders([[":status", "200"], ["content-type", "application/json"]], false);
    next.sendResponseBody(answer(10, 5).body, true);
    worker.hostCalls.clear();
    next.close();
    assert.equal(worker.hostCalls.get("proxy_get_current_time_nanoseconds"), 1);
  });

  test("a request throttle queues reaches the router only when a tick releases it", async () => {
    const queueing = { rules: [{ name: "one-at-a-time", key: ["header:x-tenant"], limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: 5000 } }], tick_ms: 20 };
    const { host, root } = await mesh({ ...sections, throttle: queueing });
    const first = root.send(chat("acme"));
    assert.equal(first.state, "forwarded");
    const queued = root.send(chat("acme"));
    assert.equal(queued.state, "held");
    assert.equal(queued.filterState.get("llm_mesh.throttle"), "waiting:one-at-a-time");
    assertNotRouted(queued);
    host.advance(200);
    assert.equal(queued.state, "held", "nothing frees the slot while the first request is in flight");
    assertNotRouted(queued);

    first.answer(answer(11, 4));
    host.advance(100);
    assert.equal(queued.state, "forwarded");
    assert.equal(queued.continues, 1);
    assert.equal(queued.filterState.get("llm_mesh.throttle"), "admitted_after_wait");
    assert.equal(JSON.parse(queued.forwardedBody()).model, CANARY_MODEL);
    // The router's work was done by the time the stream was resumed.
    const routedAt = queued.events.findIndex((e) => e.kind === "set-header" && e.name === "x-llm-route");
    const resumedAt = queued.events.findIndex((e) => e.kind === "continue");
    assert.ok(routedAt >= 0 && routedAt < resumedAt, `routed at event ${routedAt}, resumed at ${resumedAt}`);
    queued.answer(answer(11, 4));
    host.advancePastMetricFlush();
    assert.equal(counted(host, "queued"), 1);
  });

  test("facts admission publishes as the body passes stand in for a body over the later stages' max_body_bytes", async () => {
    // Admission does not hold the headers, so throttle and router hold them for the body, which is
    // past their own limit: the model they match on comes from admission's facts, not from reading it.
    const { host, root } = await mesh({
      admission: { ...sections.admission, hold_headers: false },
      throttle: { max_body_bytes: 64, rules: [{ name: "mini", match: { models: [MODEL] }, key: ["global"], limits: { requests_per_second: 1 } }] },
      router: { max_body_bytes: 64, targets: { primary: {}, canary: {} }, rules: [{ name: "mini", match: { models: [MODEL] }, target: "canary" }] },
    });
    const request = chat("acme");
    assert.ok(request.body.length > 64);
    const first = root.send(request);
    assert.equal(first.state, "forwarded");
    assert.equal(first.filterState.get("llm_mesh.throttle"), "admitted");
    assert.equal(first.header("x-llm-route"), "canary");
    assert.equal(root.send(chat("acme")).state, "answered 429");
    host.advancePastMetricFlush();
    assert.equal(host.metric("llm_throttle.mini.rejected"), 1);
  });

  test("a bad section is refused with the section and field named", async () => {
    const worker = await new InMemoryHost().startWorker(builtModule("mesh"));
    const bad = { rules: [{ name: "r", key: ["global"], limits: { requests_per_second: 0 } }] };
    assert.throws(() => worker.configure({ ...sections, throttle: bad }),
      /llm-mesh\[\d+\]: invalid configuration, refusing to start: throttle\.rules\[0\]\.limits\.requests_per_second/);
    assert.equal(worker.roots.size, 0);
  });
});
