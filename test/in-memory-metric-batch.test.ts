// Counters and gauges reach the host in batches (assembly/host/metric-batch.ts), here through the
// metrics filter alone (build/metrics.wasm) in the in-memory host: nothing per request, one
// increment per moved metric from a tick within the flush period, nothing for changes that cancel
// out, no ticks once nothing is held, and nothing lost when a root goes (a reload). The real Envoy:
// test/router-reload.test.ts counts every decision across reloads, test/mesh.test.ts a request.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { builtModule, InMemoryHost, jsonRequest, type Root, type Worker } from "../tooling/in-memory-host.ts";
import { METRIC_FLUSH_MS } from "../tooling/stats.ts";

const MODEL = "gpt-4o";
const config = { models: [MODEL] };

const chat = () => jsonRequest({ model: MODEL, messages: [{ role: "user", content: "Say hello." }], max_tokens: 8 });
const answer = {
  body: JSON.stringify({
    id: "chatcmpl-1", object: "chat.completion", model: MODEL,
    choices: [{ index: 0, message: { role: "assistant", content: "Hello." }, finish_reason: "stop" }],
    usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 },
  }),
};

/** A metric family summed over its labels, as the host holds it. */
const total = (host: InMemoryHost, family: string) =>
  [...host.metrics].filter(([name]) => name.startsWith(family)).reduce((sum, [, m]) => sum + m.value, 0);

const requests = (host: InMemoryHost) => total(host, "gen_ai_server_requests_total");
const increments = (worker: Worker) => worker.hostCalls.get("proxy_increment_metric") ?? 0;

async function metricsFilter(): Promise<{ host: InMemoryHost; worker: Worker; root: Root }> {
  const host = new InMemoryHost();
  const worker = await host.startWorker(builtModule("metrics"));
  return { host, worker, root: worker.configure(config) };
}

describe("counters and gauges in batches, in memory", () => {
  test("requests make no increment calls; one tick within the flush period sends one per metric that moved", async () => {
    const { host, worker, root } = await metricsFilter();
    assert.equal(root.tickPeriodMs, 0, "nothing held: no ticks");
    for (let i = 0; i < 10; i++) root.send(chat()).answer(answer);
    assert.equal(increments(worker), 0);
    assert.equal(requests(host), 0, "held in the VM until the batch goes");
    assert.equal(root.tickPeriodMs, METRIC_FLUSH_MS, "the first change asked for the tick that sends it");

    host.advance(METRIC_FLUSH_MS);
    assert.equal(requests(host), 10);
    assert.equal(total(host, "gen_ai_usage_tokens_total"), 10 * 15);
    // One call per counter that moved; the in-flight gauge went +1 and -1 ten times and costs nothing.
    const moved = [...host.metrics.values()].filter((m) => m.kind !== "histogram" && m.value !== 0).length;
    assert.equal(increments(worker), moved);
    assert.ok(moved <= 3, `${moved} counters moved`);
    assert.equal(total(host, "gen_ai_server_active_requests"), 0);
    assert.equal(root.tickPeriodMs, 0, "the tick that sent the last change stopped the ticks");
  });

  test("a gauge that moved is sent as its net change, and read at most a flush period late", async () => {
    const { host, root } = await metricsFilter();
    const open = [root.send(chat()), root.send(chat())];
    assert.equal(total(host, "gen_ai_server_active_requests"), 0);
    host.advance(METRIC_FLUSH_MS);
    assert.equal(total(host, "gen_ai_server_active_requests"), 2);
    open[0].answer(answer);
    host.advance(METRIC_FLUSH_MS);
    assert.equal(total(host, "gen_ai_server_active_requests"), 1);
    open[1].answer(answer);
    host.advance(METRIC_FLUSH_MS);
    assert.equal(total(host, "gen_ai_server_active_requests"), 0);
    assert.equal(requests(host), 2);
  });

  test("changes made between flushes each reach the host: none lost, none counted twice", async () => {
    const { host, root } = await metricsFilter();
    let sent = 0;
    for (let round = 0; round < 7; round++) {
      for (let i = 0; i <= round; i++, sent++) root.send(chat()).answer(answer);
      host.advance(137 * (round + 1));
    }
    host.advancePastMetricFlush();
    assert.equal(requests(host), sent);
    host.advance(5 * METRIC_FLUSH_MS);
    assert.equal(requests(host), sent);
  });

  test("a root that goes (a reload) sends what the VM holds, its successor's counts too, without a tick", async () => {
    const { host, worker, root } = await metricsFilter();
    for (let i = 0; i < 3; i++) root.send(chat()).answer(answer);
    const successor = worker.configure(config);
    for (let i = 0; i < 2; i++) successor.send(chat()).answer(answer);
    assert.equal(requests(host), 0);
    root.delete();
    assert.equal(requests(host), 5);
    // Nothing is held now: no tick is needed, and none sends anything again.
    host.advance(3 * METRIC_FLUSH_MS);
    assert.equal(requests(host), 5);
    successor.send(chat()).answer(answer);
    host.advancePastMetricFlush();
    assert.equal(requests(host), 6);
  });
});
