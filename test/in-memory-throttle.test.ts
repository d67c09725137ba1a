// The throttle filter alone (build/throttle.wasm) in the in-memory host (tooling/in-memory-host.ts),
// its queue under a clock the test moves: a request over the limit of a rule with action "queue" is
// held, with no continue, until a tick finds room for it, or is refused with 429 and Retry-After
// once queue.max_wait_ms has passed. Budgets live in shared data, so two workers share one queue.
// test/throttle.test.ts runs the same rules in the real Envoy, with real time.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { builtModule, headerValue, InMemoryHost, jsonRequest, type Root } from "../tooling/in-memory-host.ts";

const TICK_MS = 20;
// Long enough to wait out the modules' metric flush (a second) while a request waits.
const MAX_WAIT_MS = 3000;
const config = {
  tick_ms: TICK_MS,
  rules: [{ name: "queue", key: ["header:x-tenant"], limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: MAX_WAIT_MS, max_length: 2 } }],
};

const chat = (tenant: string) => jsonRequest({ model: "gpt-4o", messages: [{ role: "user", content: "Say hello." }], max_tokens: 4 }, { "x-tenant": tenant });

async function workers(count: number): Promise<{ host: InMemoryHost; roots: Root[] }> {
  const host = new InMemoryHost();
  const roots: Root[] = [];
  for (let i = 0; i < count; i++) roots.push((await host.startWorker(builtModule("throttle"))).configure(config));
  return { host, roots };
}


describe("llm-throttle's queue, in memory", () => {
  test("a request over the limit is held, and a tick lets it through once the request in flight ends", async () => {
    const { host, roots: [root] } = await workers(1);
    assert.equal(root.tickPeriodMs, TICK_MS);
    const first = root.send(chat("acme"));
    assert.equal(first.state, "forwarded");
    const second = root.send(chat("acme"));
    assert.equal(second.state, "held");
    assert.equal(second.filterState.get("llm_mesh.throttle"), "waiting:queue");

    host.advance(MAX_WAIT_MS / 2);
    assert.equal(host.metric("llm_throttle.queue.waiting"), 1);
    assert.equal(second.state, "held", "no room while the first request is in flight");
    assert.equal(second.continues, 0);

    first.answer();
    assert.equal(second.state, "held", "released from a tick, not as the first request ends");
    host.advance(3 * TICK_MS);
    assert.equal(second.state, "forwarded");
    assert.equal(second.continues, 1);
    assert.equal(second.filterState.get("llm_mesh.throttle"), "admitted_after_wait");
    // The body waited with the request and went upstream whole.
    assert.equal(JSON.parse(second.forwardedBody()).model, "gpt-4o");
    host.advancePastMetricFlush();
    assert.deepEqual([host.metric("llm_throttle.queue.waiting"), host.metric("llm_throttle.queue.in_flight")], [0, 1]);
    second.answer();
    host.advancePastMetricFlush();
    assert.equal(host.metric("llm_throttle.queue.in_flight"), 0);
  });

  test("a request still without room after max_wait_ms is refused with 429 and Retry-After", async () => {
    const { host, roots: [root] } = await workers(1);
    const first = root.send(chat("acme"));
    const late = root.send(chat("acme"));
    host.advance(MAX_WAIT_MS - 2 * TICK_MS);
    assert.equal(late.state, "held", "refused before its wait ran out");
    host.advance(3 * TICK_MS);
    assert.equal(late.state, "answered 429");
    assert.match(headerValue(late.localResponse!.headers, "retry-after") ?? "", /^[1-9]\d*$/);
    assert.match(JSON.parse(late.localResponse!.body).error.message, /no room under its limits after waiting \d+(?:ms|s)\./);
    assert.equal(late.continues, 0);
    assert.equal(late.headersForwarded, false);
    assert.equal(late.filterState.get("llm_mesh.throttle"), "rejected:queue");
    host.advancePastMetricFlush();
    assert.equal(host.metric("llm_throttle.queue.queue_timeouts"), 1);
    assert.equal(host.metric("llm_throttle.queue.waiting"), 0);
    late.answer();
    first.answer();
  });

  test("a full queue refuses at once; a client that leaves frees its place", async () => {
    const { host, roots: [root] } = await workers(1);
    const first = root.send(chat("acme"));
    const waiting = [root.send(chat("acme")), root.send(chat("acme"))];
    const full = root.send(chat("acme"));
    assert.equal(full.state, "answered 429");
    assert.match(JSON.parse(full.localResponse!.body).error.message, /the queue holds 2/);
    waiting[0].close();
    assert.equal(root.send(chat("acme")).state, "held");
    // Other tenants have queues of their own.
    assert.equal(root.send(chat("globex")).state, "forwarded");
    first.answer();
    host.advance(3 * TICK_MS);
    assert.equal(waiting[1].state, "forwarded", "the oldest request still waiting goes first");
  });

  test("workers share the budget: a request queued on one is released when the one in flight on another ends", async () => {
    const { host, roots: [one, two] } = await workers(2);
    const first = one.send(chat("acme"));
    assert.equal(first.state, "forwarded");
    const second = two.send(chat("acme"));
    assert.equal(second.state, "held", "the other worker sees the request in flight");
    host.advance(MAX_WAIT_MS / 2);
    assert.equal(second.state, "held");
    first.answer();
    host.advance(3 * TICK_MS);
    assert.equal(second.state, "forwarded");
    assert.equal(second.continues, 1);
  });
});
