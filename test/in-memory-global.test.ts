// llm-throttle's global rules (backend "global") in the in-memory host, against a stand-in for the
// rate limit service that counts as envoyproxy/ratelimit does (tooling/ratelimit.ts FINDINGS: a
// fixed window per unit, each descriptor's hits added and the new total judged, refused hits counted
// too), under a clock the test moves. What a request asks, when it goes on, what it settles and
// what it does when the service fails are checked call by call here; test/global-budget.test.ts runs
// the real service, Redis and two Envoys.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { builtModule, type GrpcCall, InMemoryHost, jsonRequest, type Root } from "../tooling/in-memory-host.ts";
import { decodeRequest, encodeResponse, type DescriptorStatus, type RateLimitRequest, UNITS } from "../tooling/rls-wire.ts";

const DOMAIN = "llm-mesh-test";
const TIMEOUT_MS = 100;
const BACKOFF_MS = 1000;
const service = { cluster: "ratelimit", domain: DOMAIN, timeout_ms: TIMEOUT_MS, failure_threshold: 2, failure_backoff_ms: BACKOFF_MS };
const perTenant = ["header:x-tenant"];
const only = (scenario: string) => ({ headers: [{ name: "x-scenario", exact: scenario }] });
const config = {
  tick_ms: 20,
  rate_limit_service: service,
  rules: [
    { name: "tpm", match: only("tpm"), key: perTenant, backend: "global", limits: { tokens_per_minute: 200 } },
    { name: "rps", match: only("rps"), key: perTenant, backend: "global", limits: { requests_per_second: 2 }, on_service_failure: "allow" },
    { name: "deny", match: only("deny"), key: perTenant, backend: "global", limits: { requests_per_second: 2 }, on_service_failure: "deny" },
    { name: "queue", match: only("queue"), key: perTenant, backend: "global", limits: { tokens_per_minute: 100 }, action: "queue", queue: { max_wait_ms: 120_000 } },
  ],
};

/** The service: counters by key and window, on the host's clock, judged after each increment. */
class StandInService {
  readonly counters = new Map<string, number>();

  constructor(private host: InMemoryHost) {}

  /** Answers `call` and returns what it asked. */
  answer(call: GrpcCall): RateLimitRequest {
    assert.equal(call.path, "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit");
    const request = decodeRequest(Buffer.from(call.message));
    assert.equal(request.domain, DOMAIN);
    const nowS = Math.floor(this.host.nowMs() / 1000);
    const statuses: DescriptorStatus[] = request.descriptors.map((d) => {
      const unitS = d.limit!.unit === "SECOND" ? 1 : 60;
      const key = `${request.domain}_${d.entries.map(([k, v]) => `${k}_${v}_`).join("")}${nowS - (nowS % unitS)}`;
      const total = (this.counters.get(key) ?? 0) + (d.hitsAddend ?? 1);
      this.counters.set(key, total);
      const over = total > d.limit!.requestsPerUnit;
      return {
        code: over ? "OVER_LIMIT" : "OK",
        currentLimit: { requestsPerUnit: d.limit!.requestsPerUnit, unit: UNITS[d.limit!.unit], name: "" },
        limitRemaining: over ? 0 : d.limit!.requestsPerUnit - total,
        durationUntilReset: { seconds: unitS - (nowS % unitS), nanos: 0 },
      };
    });
    call.receive(encodeResponse({ overallCode: statuses.some((s) => s.code === "OVER_LIMIT") ? "OVER_LIMIT" : "OK", statuses }));
    return request;
  }

  /** The total of the counter a rule's limit keeps for a key this minute. */
  counter(limit: string): number {
    return [...this.counters].filter(([k]) => k.includes(`_limit_${limit}_`)).reduce((sum, [, v]) => sum + v, 0);
  }
}

const chat = (scenario: string, tenant: string, maxTokens = 20) =>
  jsonRequest({ model: "gpt-4o", messages: [{ role: "user", content: "Say hello." }], max_tokens: maxTokens }, { "x-scenario": scenario, "x-tenant": tenant });
const usage = (prompt: number, completion: number) => ({
  body: JSON.stringify({ object: "chat.completion", choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } }),
});
const tokensOf = (asked: RateLimitRequest, limit = "tokens") => asked.descriptors.find((d) => d.entries.some(([k, v]) => k === "limit" && v === limit))?.hitsAddend;
const metric = (host: InMemoryHost, name: string, rule: string, labels = "") => host.metric(`${name}llm_rule=.=${rule};.;${labels}`);

async function setUp(): Promise<{ host: InMemoryHost; root: Root; rls: StandInService; calls: GrpcCall[] }> {
  // A second into a minute: the service says its windows reset in 59 s.
  const host = new InMemoryHost({ startMs: Date.UTC(2026, 0, 5, 10, 2, 1) });
  const worker = await host.startWorker(builtModule("throttle"));
  const root = worker.configure(config);
  return { host, root, rls: new StandInService(host), calls: worker.grpcCalls };
}

describe("llm-throttle's global rules, in memory", () => {
  test("a request waits for the service's OK, then goes on with its figures; what it did not use is spent by the next one first", async () => {
    const { host, root, rls, calls } = await setUp();
    const first = root.send(chat("tpm", "acme", 20));
    assert.equal(first.state, "held");
    assert.equal(calls.length, 1);
    const asked = rls.answer(calls[0]);
    const reserved = tokensOf(asked)!;
    assert.deepEqual(asked.descriptors[0].entries.map(([k]) => k), ["rule", "key", "limit"]);
    assert.equal(asked.descriptors[0].entries[0][1], "tpm");
    assert.match(asked.descriptors[0].entries[1][1], /^[0-9a-f]{16}$/);
    assert.deepEqual(asked.descriptors[0].limit, { requestsPerUnit: 200, unit: "MINUTE" });
    assert.equal(asked.hitsAddend, reserved, "one descriptor: its hits are sent request-wide too");
    assert.equal(first.state, "forwarded");
    first.answer({ ...usage(5, 10), headers: [["content-type", "application/json"]] });
    assert.equal(first.responseHeader("x-ratelimit-remaining-tokens"), String(200 - reserved));
    assert.equal(first.responseHeader("x-ratelimit-reset-tokens"), "59s");

    // The 5 + 10 used leave reserved - 15 as credit: the next request asks only for what it lacks.
    const second = root.send(chat("tpm", "acme", 20));
    assert.equal(tokensOf(rls.answer(calls[0])), reserved - (reserved - 15));
    host.advancePastMetricFlush();
    assert.equal(metric(host, "llm_throttle_global_credit_spent_tokens_total", "tpm"), reserved - 15);
    second.answer(usage(5, 10));
    // And a request the credit covers whole goes on without a call.
    const third = root.send(chat("tpm", "acme", 0));
    assert.equal(third.state, "forwarded");
    assert.equal(calls.length, 0);
    third.answer(usage(5, 0));
    host.advancePastMetricFlush();
    assert.equal(metric(host, "llm_throttle_global_calls_total", "tpm", "llm_outcome=.=ok;.;"), 2);
    // The service's counter: what was used, plus the credit this Envoy still holds.
    const credited = metric(host, "llm_throttle_global_credited_tokens_total", "tpm");
    const spent = metric(host, "llm_throttle_global_credit_spent_tokens_total", "tpm");
    assert.equal(rls.counter("tokens"), 15 + 15 + 5 + credited - spent);
    host.advance(10);
  });

  test("over the limit: 429 with the service's reset, then answered from memory until the window resets", async () => {
    const { host, root, rls, calls } = await setUp();
    const big = root.send(chat("tpm", "acme", 150));
    rls.answer(calls[0]);
    assert.equal(big.state, "forwarded");
    const over = root.send(chat("tpm", "acme", 150));
    rls.answer(calls[0]);
    assert.equal(over.localResponse?.status, 429);
    assert.equal(over.localResponse!.details, "llm-throttle_tokens");
    const headers = Object.fromEntries(over.localResponse!.headers);
    assert.equal(headers["retry-after"], "59");
    assert.equal(headers["x-ratelimit-remaining-tokens"], "0");
    assert.match(JSON.parse(over.localResponse!.body).error.message, /^Rate limit reached for tokens per minute \(llm-throttle rule `tpm`\): limit 200, requested \d+\. Please try again in 59s\.$/);

    // The service counted the refused hits too; asking again would count them again.
    host.advance(20_000);
    const cached = root.send(chat("tpm", "acme", 5));
    assert.equal(calls.length, 0);
    assert.equal(cached.localResponse?.status, 429);
    assert.equal(Object.fromEntries(cached.localResponse!.headers)["retry-after"], "39");
    host.advancePastMetricFlush();
    assert.equal(metric(host, "llm_throttle_global_cached_denials_total", "tpm"), 1);
    const otherTenant = root.send(chat("tpm", "other", 5));
    assert.equal(calls.length, 1, "another key asks");
    rls.answer(calls[0]);
    otherTenant.answer(usage(5, 5));

    host.advance(40_000);
    const nextWindow = root.send(chat("tpm", "acme", 5));
    assert.equal(calls.length, 1);
    rls.answer(calls[0]);
    assert.equal(nextWindow.state, "forwarded");
    big.answer(usage(5, 150));
    nextWindow.answer(usage(5, 5));
  });

  test("a request that used more than it reserved sends the difference from the root, holding nothing up", async () => {
    const { host, root, rls, calls } = await setUp();
    const stream = root.send(chat("tpm", "acme", 10));
    const reserved = tokensOf(rls.answer(calls[0]))!;
    stream.answer(usage(reserved, 10));
    assert.equal(stream.closed, true);
    assert.equal(calls.length, 1);
    const settled = rls.answer(calls[0]);
    assert.equal(tokensOf(settled), 10);
    host.advancePastMetricFlush();
    assert.equal(metric(host, "llm_throttle_global_settle_calls_total", "tpm"), 1);
    assert.equal(rls.counter("tokens"), reserved + 10);
  });

  test("a queued request retries its reservation once the window it was refused in has reset, not before", async () => {
    const { host, root, rls, calls } = await setUp();
    const big = root.send(chat("queue", "acme", 80));
    rls.answer(calls[0]);
    const queued = root.send(chat("queue", "acme", 40));
    rls.answer(calls[0]);
    assert.equal(queued.state, "held");
    assert.equal(queued.filterState.get("llm_mesh.throttle"), "waiting:queue");
    host.advance(58_900);
    assert.equal(calls.length, 0, "no retry is asked while the service said the window is over");
    host.advance(150);
    assert.equal(calls.length, 1);
    rls.answer(calls[0]);
    assert.equal(queued.state, "forwarded");
    assert.equal(queued.filterState.get("llm_mesh.throttle"), "admitted_after_wait");
    big.answer(usage(5, 80));
    queued.answer(usage(5, 40));
    host.advancePastMetricFlush();
    assert.equal(host.metric("llm_throttle.queue.waiting"), 0);
  });

  test("a client that leaves while its request asks leaves what the service counted as credit", async () => {
    const { host, root, rls, calls } = await setUp();
    const gone = root.send(chat("tpm", "acme", 20));
    gone.close();
    const reserved = tokensOf(rls.answer(calls[0]))!;
    host.advancePastMetricFlush();
    assert.equal(metric(host, "llm_throttle_global_credited_tokens_total", "tpm"), reserved);
    const next = root.send(chat("tpm", "acme", 20));
    assert.equal(calls.length, 0, "the credit covers the next request");
    assert.equal(next.state, "forwarded");
  });

  test("the service failing: on_service_failure decides within the timeout, the circuit stops asking, one probe brings it back", async () => {
    const { host, root, rls, calls } = await setUp();
    // Timed out by Envoy: the request goes on under on_service_failure local (half of 200 here).
    const slow = root.send(chat("tpm", "acme", 20));
    host.advance(TIMEOUT_MS);
    assert.equal(slow.state, "forwarded");
    host.advancePastMetricFlush();
    assert.equal(metric(host, "llm_throttle_global_fallbacks_total", "tpm", "llm_failure_mode=.=local;.;"), 1);
    // A close with an error status: on_service_failure allow.
    const allowed = root.send(chat("rps", "acme"));
    calls[0].close(2, "response returned from Conn: EOF");
    assert.equal(allowed.state, "forwarded");
    assert.match(host.logs.map((l) => l.message).join("\n"), /rate limit service ratelimit unavailable after 2 failed calls \(last: gRPC status 2 \(response returned from Conn: EOF\)\)/);
    // Open: nobody asks; deny answers 503 at once.
    const denied = root.send(chat("deny", "acme"));
    assert.equal(calls.length, 0);
    assert.equal(denied.localResponse?.status, 503);
    assert.equal(JSON.parse(denied.localResponse!.body).error.code, "rate_limit_service_unavailable");
    assert.equal(Object.fromEntries(denied.localResponse!.headers)["retry-after"], "1", "until the next probe");
    const local = root.send(chat("tpm", "acme", 20));
    assert.equal(local.state, "forwarded");
    // This Envoy's share (100 of the 200 tokens) counts what it admitted all along, the service's share too.
    for (const s of [slow, allowed, local]) s.answer(usage(5, 5));
    // Past the backoff one call probes; its answer closes the circuit.
    host.advance(BACKOFF_MS);
    const probe = root.send(chat("tpm", "acme", 20));
    const notProbe = root.send(chat("tpm", "acme", 20));
    assert.equal(calls.length, 1, "one probe at a time");
    assert.equal(notProbe.state, "forwarded");
    rls.answer(calls[0]);
    assert.equal(probe.state, "forwarded");
    assert.match(host.logs.at(-1)!.message, /rate limit service ratelimit answers again/);
    root.send(chat("tpm", "acme", 20));
    assert.equal(calls.length, 1);
    assert.equal(host.logs.filter((l) => /unavailable after/.test(l.message)).length, 1, "said once");
    for (const s of [probe, notProbe]) s.answer(usage(5, 5));
  });
});
