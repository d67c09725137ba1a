// Distributed tracing in the real Envoy, read back from a real Jaeger (scripts/setup-tracing.sh):
// envoy/tracing.yaml's OpenTelemetry tracer sends each request's span over OTLP/gRPC, and its custom
// tags fill the span from the filter state the llm-mesh filters leave (docs/tracing.md). Checked:
// the GenAI and llm_mesh attributes of plain, streamed, refused (413, 400), throttled (429), queued,
// canary and shadow requests; the client's W3C trace context at the model servers; no prompt or
// answer text on any span; and the same attributes from the four filters and from the one module.
// Jaeger missing is a failure here, never a skip: `npm test` builds it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type EnvoyHandle, startEnvoy } from "../tooling/envoy.ts";
import { type HttpResult, postJson, readSse } from "../tooling/http.ts";
import { type JaegerHandle, type Span, startJaeger } from "../tooling/jaeger.ts";
import { type RecordedRequest } from "../tooling/mock-llm.ts";
import { useModelMocks } from "../tooling/model-mocks.ts";
import { asOneModule } from "../tooling/one-module.ts";

const PROMPT = "Say hello to the mesh, tracing-canary-7f3a.";
const hello = [{ role: "user", content: PROMPT }];
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** The demo's throttle rule, and a queue of one for the tenant "queue". */
const THROTTLE = {
  rules: [
    { name: "per-tenant", key: ["header:x-tenant"], limits: { requests_per_second: 5, tokens_per_minute: 20000, max_in_flight: 4 }, action: "reject", default_output_tokens: 256 },
    { name: "one-at-a-time", match: { headers: [{ name: "x-tenant", exact: "queue" }] }, key: ["header:x-tenant"], limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: 5000 } },
  ],
};

/** A client's trace context: a fresh trace, sampled, with a vendor's tracestate. */
function clientContext() {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, headers: { traceparent: `00-${traceId}-${spanId}-01`, tracestate: "client=7,vendor=abc" } };
}

/** The parts of a traceparent header. */
function parseTraceparent(value: unknown) {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(String(value));
  assert.ok(m, `not a W3C traceparent: ${value}`);
  return { traceId: m[1], parentId: m[2], flags: m[3] };
}

/** The attributes llm-mesh adds: the GenAI ones and its own. */
const llmAttributes = (span: Span) => Object.fromEntries(Object.entries(span.attributes).filter(([k]) => k.startsWith("gen_ai.") || k.startsWith("llm_mesh.")));

const BUILDS = [
  { name: "the four filters", edit: undefined },
  { name: "the one module", edit: asOneModule },
] as const;

describe("tracing with Envoy's OpenTelemetry tracer", () => {
  const mocks = useModelMocks();
  let jaeger: JaegerHandle;
  /** Per build, per case: the llm attributes of the gateway's span, for the comparison at the end. */
  const seen = new Map<string, Map<string, Record<string, string>>>();

  before(async () => {
    jaeger = await startJaeger();
  });
  after(() => jaeger?.stop());

  /** The spans of one trace, once Jaeger holds at least `count` of them. */
  const traceOf = (traceId: string, count: number) => jaeger.waitFor(() => jaeger.trace(traceId), (spans) => spans.length >= count);
  const gatewaySpan = (spans: Span[]) => {
    const found = spans.filter((s) => s.service === "llm-gateway" && s.name !== "mirror");
    assert.equal(found.length, 1, JSON.stringify(spans, null, 1));
    return found[0];
  };
  /** The trace context a model server received with a request. */
  const contextAt = (request: RecordedRequest) => ({ ...parseTraceparent(request.headers.traceparent), tracestate: request.headers.tracestate });
  const noText = (spans: Span[], ...texts: string[]) => {
    const all = JSON.stringify(spans);
    for (const text of texts) assert.ok(!all.includes(text), `a span carries ${JSON.stringify(text)}`);
  };

  for (const build of BUILDS) {
    describe(build.name, () => {
      let envoy: EnvoyHandle;
      const cases = new Map<string, Record<string, string>>();
      seen.set(build.name, cases);
      const resetMocks = () => mocks.all().forEach((m) => m.reset());
      const post = (path: string, body: unknown, headers: Record<string, string>) => postJson(envoy.url(path), body, headers);

      before(async () => {
        envoy = await startEnvoy({
          scenario: "tracing",
          vars: { ...mocks.ports(), OTLP_PORT: jaeger.otlpPort, SAMPLING: 100, THROTTLE_CONFIG: THROTTLE },
          edit: build.edit,
        });
      });
      after(async () => {
        if (!envoy) return;
        const stats = await envoy.stats();
        await envoy.stop();
        // A span Envoy could not send would leave an attribute unchecked without a failing test.
        assert.equal(stats.get("tracing.opentelemetry.spans_dropped") ?? 0, 0, "Envoy dropped spans");
      });

      test("a plain request: the span has the request's and the answer's facts; the model server sees the client's trace", async () => {
        resetMocks();
        const client = clientContext();
        const res = await post("/v1/chat/completions", { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { ...client.headers, "x-tenant": "plain" });
        assert.equal(res.status, 200, res.text);
        const usage = res.json.usage;
        // The gateway's span, Envoy's mirror span and the shadow sidecar's span.
        const spans = await traceOf(client.traceId, 3);
        const span = gatewaySpan(spans);
        assert.equal(span.parentSpanId, client.spanId, "the gateway's span continues the client's");
        assert.equal(span.attributes["http.status_code"], "200");
        const attributes = llmAttributes(span);
        assert.ok(Number(attributes["llm_mesh.prompt_tokens_estimated"]) > 0);
        assert.deepEqual(attributes, {
          "gen_ai.operation.name": "chat",
          "gen_ai.provider.name": "openai",
          "gen_ai.request.model": "llama-3-8b",
          "gen_ai.request.max_tokens": "8",
          "gen_ai.response.model": "llama-3-8b",
          "gen_ai.response.finish_reasons": "length",
          "gen_ai.usage.input_tokens": String(usage.prompt_tokens),
          "gen_ai.usage.output_tokens": String(usage.completion_tokens),
          "llm_mesh.api": "openai.chat",
          "llm_mesh.prompt_tokens_estimated": attributes["llm_mesh.prompt_tokens_estimated"],
          "llm_mesh.admission": "admitted",
          "llm_mesh.throttle": "admitted",
          "llm_mesh.route": "primary",
          "llm_mesh.router": "target=primary by=default",
          "llm_mesh.outcome": "admitted",
          "llm_mesh.usage_source": "upstream",
        });
        // The model server got the client's trace and tracestate, as a child of the gateway's span.
        assert.equal(mocks.primary.requests.length, 1);
        assert.deepEqual(contextAt(mocks.primary.requests[0]), { traceId: client.traceId, parentId: span.spanId, flags: "01", tracestate: client.headers.tracestate });
        noText(spans, PROMPT, res.json.choices[0].message.content);
        cases.set("plain", attributes);
      });

      test("shadow: the mirrored copy is in the same trace, marked shadow, and reaches the shadow model with the client's trace", async () => {
        resetMocks();
        const client = clientContext();
        const res = await post("/v1/chat/completions", { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { ...client.headers, "x-tenant": "shadow" });
        assert.equal(res.status, 200, res.text);
        const spans = await traceOf(client.traceId, 3);
        const gateway = gatewaySpan(spans);
        // Envoy's router makes a child span for the mirrored copy; the shadow side continues it.
        const mirror = spans.find((s) => s.service === "llm-gateway" && s.name === "mirror");
        assert.ok(mirror, JSON.stringify(spans, null, 1));
        assert.equal(mirror.parentSpanId, gateway.spanId);
        assert.equal(mirror.attributes.upstream_cluster, "shadow");
        const shadow = spans.find((s) => s.service === "llm-model-shadow");
        assert.ok(shadow, JSON.stringify(spans, null, 1));
        assert.equal(shadow.parentSpanId, mirror.spanId);
        const attributes = llmAttributes(shadow);
        assert.equal(attributes["llm_mesh.route"], "shadow");
        assert.equal(attributes["llm_mesh.router"], "target=shadow");
        assert.equal(attributes["gen_ai.request.model"], "llama-3-8b");
        assert.equal(attributes["gen_ai.response.model"], "llama-3-8b", "the shadow's rewrite_model");
        for (let i = 0; i < 50 && mocks.shadow.requests.length === 0; i++) await sleep(50);
        assert.equal(mocks.shadow.requests.length, 1);
        assert.deepEqual(contextAt(mocks.shadow.requests[0]), { traceId: client.traceId, parentId: shadow.spanId, flags: "01", tracestate: client.headers.tracestate });
        noText(spans, PROMPT);
        cases.set("shadow", attributes);
      });

      test("a streamed answer: time to first token, and usage counted where the stream reports none", async () => {
        resetMocks();
        const openai = clientContext();
        const res = await post("/v1/chat/completions", { model: "llama-3-8b", messages: hello, max_tokens: 6, stream: true }, { ...openai.headers, "x-tenant": "stream", "x-mock-chunk-delay-ms": "10" });
        assert.equal(res.status, 200, res.text);
        assert.equal(readSse(res.text).at(-1)!.data, "[DONE]");
        const span = gatewaySpan(await traceOf(openai.traceId, 3));
        const attributes = llmAttributes(span);
        assert.ok(Number(attributes["llm_mesh.ttft_ms"]) >= 0, JSON.stringify(attributes));
        assert.equal(attributes["llm_mesh.usage_source"], "estimated");
        // llm-mesh's estimate of the six words the mock streamed (one o200k token each).
        assert.ok(Math.abs(Number(attributes["gen_ai.usage.output_tokens"]) - 6) <= 1, JSON.stringify(attributes));
        assert.equal(attributes["gen_ai.response.finish_reasons"], "length");
        assert.equal(attributes["gen_ai.operation.name"], "chat");

        const anthropic = clientContext();
        const streamed = await post("/v1/messages", { model: "claude-3-5-haiku-latest", max_tokens: 32, messages: hello, stream: true }, { ...anthropic.headers, "x-tenant": "stream", "anthropic-version": "2023-06-01", "x-mock-completion-tokens": "5" });
        assert.equal(streamed.status, 200, streamed.text);
        const delta = readSse(streamed.text).map((e) => JSON.parse(e.data)).find((e) => e.type === "message_delta");
        const claude = llmAttributes(gatewaySpan(await traceOf(anthropic.traceId, 3)));
        assert.equal(claude["gen_ai.provider.name"], "anthropic");
        assert.equal(claude["llm_mesh.api"], "anthropic.messages");
        assert.equal(claude["gen_ai.usage.output_tokens"], String(delta.usage.output_tokens));
        assert.equal(claude["llm_mesh.usage_source"], "upstream");
        assert.equal(claude["gen_ai.response.finish_reasons"], "end_turn");
        assert.ok(Number(claude["llm_mesh.ttft_ms"]) >= 0);
        cases.set("streamed", { ...attributes, "llm_mesh.ttft_ms": "(set)" });
        cases.set("streamed-anthropic", { ...claude, "llm_mesh.ttft_ms": "(set)" });
      });

      test("requests admission refuses (413, 400) have spans with the reason, and reach no model", async () => {
        resetMocks();
        const tooLong = clientContext();
        const long = [{ role: "user", content: `${PROMPT} ${"lorem ipsum dolor ".repeat(2000)}` }];
        const refused = await post("/v1/chat/completions", { model: "llama-3-8b", messages: long, max_tokens: 8 }, { ...tooLong.headers, "x-tenant": "refused" });
        assert.equal(refused.status, 413, refused.text);
        const unknown = clientContext();
        const notFound = await post("/v1/chat/completions", { model: "gpt-9", messages: hello }, { ...unknown.headers, "x-tenant": "refused" });
        assert.equal(notFound.status, 400, notFound.text);
        assert.equal(mocks.all().reduce((n, m) => n + m.requests.length, 0), 0);

        const spans413 = await traceOf(tooLong.traceId, 1);
        const span413 = gatewaySpan(spans413);
        assert.equal(span413.attributes["http.status_code"], "413");
        const attributes413 = llmAttributes(span413);
        assert.equal(attributes413["llm_mesh.admission"], "rejected:context_length_exceeded");
        assert.equal(attributes413["llm_mesh.outcome"], "rejected");
        assert.equal(attributes413["gen_ai.request.model"], "llama-3-8b");
        assert.ok(Number(attributes413["llm_mesh.prompt_tokens_estimated"]) > 4000, "the estimate that was refused");
        for (const absent of ["llm_mesh.throttle", "llm_mesh.route", "gen_ai.response.model", "gen_ai.usage.output_tokens"]) assert.equal(attributes413[absent], undefined, absent);
        noText(spans413, PROMPT, "lorem ipsum");

        const span400 = gatewaySpan(await traceOf(unknown.traceId, 1));
        assert.equal(span400.attributes["http.status_code"], "400");
        assert.equal(llmAttributes(span400)["llm_mesh.admission"], "rejected:model_not_found");
        assert.equal(llmAttributes(span400)["llm_mesh.outcome"], "rejected");
        cases.set("413", attributes413);
        cases.set("400", llmAttributes(span400));
      });

      test("a throttled request (429) has a span naming the rule", async () => {
        resetMocks();
        const results: Array<{ res: HttpResult; traceId: string }> = [];
        for (let i = 0; i < 8; i++) {
          const client = clientContext();
          results.push({ res: await post("/v1/chat/completions", { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { ...client.headers, "x-tenant": `burst-${build.name}` }), traceId: client.traceId });
        }
        const rejected = results.find((r) => r.res.status === 429);
        assert.ok(rejected, results.map((r) => r.res.status).join(" "));
        const span = gatewaySpan(await traceOf(rejected.traceId, 1));
        assert.equal(span.attributes["http.status_code"], "429");
        const attributes = llmAttributes(span);
        assert.equal(attributes["llm_mesh.throttle"], "rejected:per-tenant");
        assert.equal(attributes["llm_mesh.outcome"], "throttled");
        assert.equal(attributes["llm_mesh.admission"], "admitted");
        assert.equal(attributes["llm_mesh.route"], undefined, "the router never saw it");
        cases.set("429", attributes);
      });

      test("a queued request's span says how long it waited", async () => {
        resetMocks();
        const first = clientContext();
        const slow = post("/v1/chat/completions", { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { ...first.headers, "x-tenant": "queue", "x-mock-latency-ms": "600" });
        await sleep(150);
        const second = clientContext();
        const queued = await post("/v1/chat/completions", { model: "llama-3-8b", messages: hello, max_tokens: 8 }, { ...second.headers, "x-tenant": "queue" });
        assert.equal((await slow).status, 200);
        assert.equal(queued.status, 200, queued.text);
        const attributes = llmAttributes(gatewaySpan(await traceOf(second.traceId, 3)));
        assert.equal(attributes["llm_mesh.throttle"], "admitted_after_wait");
        assert.ok(Number(attributes["llm_mesh.throttle_wait_ms"]) >= 300, JSON.stringify(attributes));
        assert.equal(llmAttributes(gatewaySpan(await traceOf(first.traceId, 3)))["llm_mesh.throttle_wait_ms"], undefined, "no wait, no attribute");
        cases.set("queued", { ...attributes, "llm_mesh.throttle_wait_ms": "(set)" });
      });

      test("a canary request: the router's target and why, and the model the canary answered as", async () => {
        resetMocks();
        const client = clientContext();
        const res = await post("/v1/chat/completions", { model: "gpt-4o-mini", messages: hello, max_tokens: 8 }, { ...client.headers, "x-tenant": "canary", "x-user-group": "beta" });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.headers["x-mock-served-by"], "canary");
        const span = gatewaySpan(await traceOf(client.traceId, 1));
        const attributes = llmAttributes(span);
        assert.equal(attributes["llm_mesh.route"], "canary");
        assert.equal(attributes["llm_mesh.router"], "target=canary by=outright rule=beta-users");
        assert.equal(attributes["gen_ai.request.model"], "gpt-4o-mini");
        assert.equal(attributes["gen_ai.response.model"], "gpt-4o-mini-2024-07-18", "the canary's rewrite_model");
        assert.equal(mocks.canary.requests.length, 1);
        assert.deepEqual(contextAt(mocks.canary.requests[0]), { traceId: client.traceId, parentId: span.spanId, flags: "01", tracestate: client.headers.tracestate });
        cases.set("canary", attributes);
      });
    });
  }

  test("the one module gives every request the same attributes as the four filters", () => {
    const [four, one] = BUILDS.map((b) => Object.fromEntries(seen.get(b.name)!));
    assert.ok(Object.keys(four).length >= 8, `cases recorded: ${Object.keys(four).join(", ")}`);
    assert.deepEqual(one, four);
  });

  describe("sampling", () => {
    test("at 0 %, only the traces a client sampled are kept, and every model server sees the client's flag unchanged", async () => {
      const envoy = await startEnvoy({ scenario: "tracing", vars: { ...mocks.ports(), OTLP_PORT: jaeger.otlpPort, SAMPLING: 0 } });
      try {
        mocks.primary.reset();
        const send = (headers: Record<string, string>) => postJson(envoy.url("/v1/chat/completions"), { model: "llama-3-8b", messages: hello, max_tokens: 4 }, { ...headers, "x-tenant": "sampling" });
        const sampled = clientContext();
        const unsampled = clientContext();
        unsampled.headers.traceparent = unsampled.headers.traceparent.replace(/-01$/, "-00");
        for (const headers of [{}, sampled.headers, unsampled.headers]) assert.equal((await send(headers)).status, 200);
        // The gateway's, the mirror's and the shadow's spans of the sampled one.
        assert.equal(llmAttributes(gatewaySpan(await traceOf(sampled.traceId, 3)))["gen_ai.request.model"], "llama-3-8b");
        const [fresh, kept, notKept] = mocks.primary.requests.map(contextAt);
        assert.deepEqual([fresh.flags, kept.flags, notKept.flags], ["00", "01", "00"]);
        assert.deepEqual([kept.traceId, notKept.traceId], [sampled.traceId, unsampled.traceId]);
        assert.deepEqual(await jaeger.trace(fresh.traceId), []);
        assert.deepEqual(await jaeger.trace(unsampled.traceId), []);
        assert.equal((await envoy.stats()).get("tracing.opentelemetry.spans_sent"), 3, "only the sampled request's spans");
      } finally {
        await envoy.stop();
      }
    });
  });
});
