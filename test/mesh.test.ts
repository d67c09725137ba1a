// The one-module build (build/mesh.wasm) in the real Envoy: the demo's configuration with its four
// filters turned into sections of one filter (tooling/one-module.ts). Each stage must act as
// its filter does in the chain: admission refuses before the others see a request, throttle's
// limits and queue hold, a queued request resumes through the router after it, metrics hands the
// answer's usage to throttle, and a bad section is refused with its field named.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { accessLog as allEntries, mirrored } from "../tooling/access-log.ts";
import { type EnvoyHandle, envoyTest, startEnvoy } from "../tooling/envoy.ts";
import { postJson, readSse } from "../tooling/http.ts";
import { useModelMocks } from "../tooling/model-mocks.ts";
import { asOneModule } from "../tooling/one-module.ts";
import { settlesAt, statSettlesAt } from "../tooling/stats.ts";

const hello = [{ role: "user", content: "Say hello to the mesh." }];
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** The main listener's entries: the shadow listener logs the mirrored copies. */
const accessLog = (envoy: EnvoyHandle, count: number) => allEntries(envoy, count, (e) => !mirrored(e));


describe("llm-mesh as one module", () => {
  const mocks = useModelMocks();
  const resetMocks = () => mocks.all().forEach((m) => m.reset());

  const demo = (vars: Record<string, unknown> = {}) => () => ({
    scenario: "demo",
    vars: { ...mocks.ports(), ...vars } as Record<string, never>,
    concurrency: 2,
    edit: asOneModule,
  });

  envoyTest("one filter in the chain: every stage's work shows on one answered request", demo(), async (envoy) => {
    resetMocks();
    const config = readFileSync(envoy.configPath, "utf8");
    assert.match(config, /mesh\.wasm/);
    assert.doesNotMatch(config, /(admission|throttle|metrics|router)\.wasm/);
    const res = await postJson(envoy.url("/v1/chat/completions"), { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { "x-tenant": "acme" });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers["x-mock-served-by"], "primary");
    // Throttle's answer headers, admission's facts forwarded upstream, the router's decision.
    assert.equal(res.headers["x-ratelimit-limit-requests"], "5");
    const seen = mocks.primary.requests[0].headers;
    assert.equal(seen["x-llm-model"], "llama-3-8b");
    assert.ok(Number(seen["x-llm-prompt-tokens"]) > 0);
    assert.equal(seen["x-llm-route"], "primary");
    const [entry] = await accessLog(envoy, 1);
    const usage = JSON.parse(res.text).usage;
    assert.equal(entry.llm.api, "openai.chat");
    assert.equal(entry.llm.admission, "admitted");
    assert.equal(entry.llm.throttle, "admitted");
    assert.equal(entry.llm.router, "target=primary by=default");
    assert.equal(entry.llm.outcome, "admitted");
    assert.equal(Number(entry.llm.completion_tokens), usage.completion_tokens);
    // The facts tracing puts on spans are in the demo's access log too.
    assert.deepEqual([entry.llm.operation, entry.llm.provider, entry.llm.usage_source], ["chat", "openai", "upstream"]);
    assert.equal(entry.llm.finish_reasons, JSON.parse(res.text).choices[0].finish_reason);
    assert.equal(entry.llm.throttle_wait_ms, null, "not queued");
    // Metrics stage counted it; throttle settled to the real usage metrics handed over.
    // (The shadow listener's stages count the mirrored copy under their own route.)
    const counted = async () => {
      const stats = await envoy.stats();
      const sum = (prefix: string, label: string) =>
        [...stats].filter(([k]) => k.startsWith(`wasmcustom.${prefix}`) && k.includes(label) && k.includes("llm_route=.=primary;.;")).reduce((a, [, v]) => a + v, 0);
      return {
        requests: sum("gen_ai_server_requests_total", "gen_ai_request_model=.=llama-3*;.;"),
        output: sum("gen_ai_usage_tokens_total", "gen_ai_token_type=.=output;.;"),
        inFlight: stats.get("wasmcustom.llm_throttle.per-tenant.in_flight") ?? 0,
        used: stats.get("wasmcustom.llm_throttle.per-tenant.tokens_used") ?? 0,
      };
    };
    await settlesAt(counted, { requests: 1, output: usage.completion_tokens, inFlight: 0, used: usage.total_tokens }, "the stages' counts");
  });

  const pluginConfig = (name: string) => JSON.parse(readFileSync(new URL(`../envoy/plugin-config/${name}.json`, import.meta.url), "utf8"));
  const noFilterState = () => Object.fromEntries(["admission", "throttle", "router"].map((name) =>
    [`${name.toUpperCase()}_CONFIG`, { ...pluginConfig(name), filter_state: false }]));

  envoyTest("filter_state false: the stages still share the facts, and Envoy's filter state holds none of them", demo(noFilterState()), async (envoy) => {
    resetMocks();
    const res = await postJson(envoy.url("/v1/chat/completions"), { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { "x-tenant": "acme" });
    assert.equal(res.status, 200, res.text);
    // Routed, and the facts forwarded upstream, from what the stages handed each other in memory.
    const seen = mocks.primary.requests[0].headers;
    assert.equal(seen["x-llm-route"], "primary");
    assert.equal(seen["x-llm-model"], "llama-3-8b");
    const [entry] = await accessLog(envoy, 1);
    for (const field of ["api", "model_requested", "prompt_tokens_estimated", "admission", "throttle", "route", "router"]) {
      assert.equal(entry.llm[field], null, `${field}: ${JSON.stringify(entry.llm)}`);
    }
    // Metrics' own record (records stays on) still names the outcome, and its series the model and route.
    assert.equal(entry.llm.outcome, "admitted");
    const counted = async () => [...(await envoy.stats())].filter(([k]) => k.startsWith("wasmcustom.gen_ai_server_requests_total") &&
      k.includes("gen_ai_request_model=.=llama-3*;.;") && k.includes("llm_route=.=primary;.;")).reduce((sum, [, v]) => sum + v, 0);
    await settlesAt(counted, 1, "requests counted by model and route");
  });

  envoyTest("admission refuses before throttle, metrics' upstream and the router see the request", demo(), async (envoy) => {
    resetMocks();
    const res = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-9", messages: hello }, { "x-tenant": "acme" });
    assert.equal(res.status, 400);
    assert.equal(JSON.parse(res.text).error.code, "model_not_found");
    assert.equal(mocks.primary.requests.length + mocks.canary.requests.length, 0);
    await statSettlesAt(envoy, "wasmcustom.llm_throttle.per-tenant.admitted", 0);
    const [entry] = await accessLog(envoy, 1);
    assert.equal(entry.llm.admission, "rejected:model_not_found");
    assert.equal(entry.llm.throttle, null);
    assert.equal(entry.llm.router, null);
  });

  envoyTest("throttle rejects over the tenant's budget with Retry-After; the router routes the rest to the canary", demo(), async (envoy) => {
    resetMocks();
    const url = envoy.url("/v1/chat/completions");
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await postJson(url, { model: "llama-3-8b", messages: hello, max_tokens: 16 }, { "x-tenant": "burst", "x-user-group": "beta" });
      statuses.push(res.status);
      if (res.status === 429) {
        assert.ok(Number(res.headers["retry-after"]) >= 1, JSON.stringify(res.headers));
        assert.equal(JSON.parse(res.text).error.code, "rate_limit_exceeded");
      } else {
        assert.equal(res.status, 200, res.text);
        assert.equal(res.headers["x-mock-served-by"], "canary");
      }
    }
    const admitted = statuses.filter((s) => s === 200).length;
    assert.ok(admitted >= 5 && admitted <= 6, statuses.join(" "));
    assert.equal(mocks.canary.requests.length, admitted);
    // The router rewrote the model for the canary, after admission and throttle had read it.
    assert.equal((mocks.canary.requests[0].json as { model: string }).model, "gpt-4o-mini-2024-07-18");
  });

  const queueing = {
    rules: [{ name: "one-at-a-time", key: ["header:x-tenant"], limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: 5000 } }],
  };

  envoyTest("a request the throttle stage queued resumes through the router stage", demo({ THROTTLE_CONFIG: queueing }), async (envoy) => {
    resetMocks();
    const url = envoy.url("/v1/chat/completions");
    const tenant = { "x-tenant": "queue" };
    const slow = postJson(url, { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { ...tenant, "x-mock-latency-ms": "700" });
    await sleep(150);
    const started = Date.now();
    const queued = await postJson(url, { model: "llama-3-8b", messages: hello, max_tokens: 8, stream: true }, { ...tenant, "x-user-group": "beta" });
    const waited = Date.now() - started;
    assert.equal((await slow).status, 200);
    assert.equal(queued.status, 200, queued.text);
    assert.ok(waited >= 300, `waited ${waited} ms`);
    // Resumed from throttle's tick: the router still ran, and rewrote the buffered body.
    assert.equal(queued.headers["x-mock-served-by"], "canary");
    assert.equal((mocks.canary.requests[0].json as { model: string }).model, "gpt-4o-mini-2024-07-18");
    assert.equal(readSse(queued.text).at(-1)!.data, "[DONE]");
    const log = await accessLog(envoy, 2);
    assert.deepEqual(log.map((e) => e.llm.throttle).sort(), ["admitted", "admitted_after_wait"]);
    const wait = Number(log.find((e) => e.llm.throttle === "admitted_after_wait")!.llm.throttle_wait_ms);
    assert.ok(wait > 0 && wait <= waited, `throttle_wait_ms ${wait}, the client waited ${waited} ms`);
    await statSettlesAt(envoy, "wasmcustom.llm_throttle.one-at-a-time.queued", 1);
  });

  test("a bad section is refused at start with the section and field named", async () => {
    const bad = { rules: [{ name: "r", key: ["global"], limits: { requests_per_second: 0 } }] };
    await assert.rejects(
      startEnvoy({ ...demo({ THROTTLE_CONFIG: bad })(), readyTimeoutMs: 15_000 }),
      /llm-mesh\[\d+\]: invalid configuration, refusing to start: throttle\.rules\[0\]\.limits\.requests_per_second/,
    );
  });
});
