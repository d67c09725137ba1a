// A new llm-router configuration takes effect without restarting Envoy: Envoy reads its listener
// from a file over filesystem xDS (envoy/router-reload.yaml), the test moves the canary from 0% to
// 100% and back by replacing that file, and a client loop running all along sees traffic follow
// with no failed request, and no decision missing from the router's counters. A configuration the
// plugin refuses is rejected and the last good one keeps serving.
import assert from "node:assert/strict";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse, stringify } from "yaml";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, renderScenario, startEnvoy, tail } from "../tooling/envoy.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { stat, statsSettleAt } from "../tooling/stats.ts";

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

const split = (canary: number) => ({ rules: [{ name: "rollout", weights: { primary: 100 - canary, canary } }] });

/**
 * The listener of envoy/router-alone.yaml as an LDS resource, with `config` as the router's plugin
 * configuration: one source for the listener, whether it comes from the bootstrap or from xDS.
 */
async function listenerResource(vars: Record<string, number | string>, config: unknown): Promise<string> {
  const rendered = await renderScenario("router-alone", { ...vars, ROUTER_CONFIG: "{}" });
  rmSync(rendered.tmpDir, { recursive: true, force: true });
  const listener = parse(rendered.yaml).static_resources.listeners[0];
  const manager = listener.filter_chains[0].filters[0].typed_config;
  delete manager.access_log;
  const router = manager.http_filters.find((f: { name: string }) => f.name === "llm-router");
  router.typed_config.config.configuration.value = typeof config === "string" ? config : JSON.stringify(config);
  return stringify({ resources: [{ "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", ...listener }] });
}

interface Outcome {
  at: number;
  status: number;
  servedBy?: string;
  error?: string;
}

/** One request on a fresh connection, so each one meets the listener's newest filter chain. */
function send(port: number): Promise<Outcome> {
  const body = JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "hello" }], max_tokens: 4 });
  return new Promise((resolve) => {
    const req = request(
      { host: "127.0.0.1", port, method: "POST", path: "/v1/chat/completions", agent: false, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on("end", () => resolve({ at: Date.now(), status: res.statusCode ?? 0, servedBy: res.headers["x-mock-served-by"] as string | undefined }));
        res.on("error", (err) => resolve({ at: Date.now(), status: 0, error: err.message }));
      },
    );
    req.on("error", (err) => resolve({ at: Date.now(), status: 0, error: err.message }));
    req.end(body);
  });
}

/** Clients sending back to back until stopped; every outcome is kept. */
function clientLoop(port: number, clients: number) {
  const outcomes: Outcome[] = [];
  let running = true;
  const done = Promise.all(
    Array.from({ length: clients }, async () => {
      while (running) outcomes.push(await send(port));
    }),
  );
  return { outcomes, stop: async () => ((running = false), await done) };
}

/** The router's decisions for a target, as Envoy counts them. */
const decisions = (target: string) => `wasmcustom.llm_router_requests_totalllm_target=.=${target};.;`;

let primary: MockLlm;
let canary: MockLlm;
before(async () => {
  primary = await startMockLlm({ name: "primary" });
  canary = await startMockLlm({ name: "canary" });
});
after(() => Promise.all([primary.close(), canary.close()]));

test("moving the canary 0% -> 100% -> 0% through filesystem xDS: traffic follows, nothing fails, no restart", { timeout: 120_000 }, async () => {
  const xdsDir = mkdtempSync(join(repoDir, ".tmp", "router-xds-"));
  const listenerVars: Record<string, number> = { UPSTREAM_PORT: primary.port, CANARY_PORT: canary.port };
  const ports = await renderScenario("router-alone", { ...listenerVars, ROUTER_CONFIG: "{}" });
  rmSync(ports.tmpDir, { recursive: true, force: true });
  listenerVars.LISTEN_PORT = ports.ports.LISTEN_PORT;
  const file = join(xdsDir, "listeners.yaml");
  // A rename within the directory is atomic: Envoy never reads a half-written file.
  const publish = async (config: unknown) => {
    const staged = join(xdsDir, ".listeners.yaml.next");
    writeFileSync(staged, await listenerResource(listenerVars, config));
    renameSync(staged, file);
  };
  await publish(split(0));

  const envoy = await startEnvoy({ scenario: "router-reload", vars: { ...listenerVars, XDS_DIR: xdsDir }, concurrency: 2 });
  const loop = clientLoop(listenerVars.LISTEN_PORT, 4);
  try {
    const pid = envoy.pid;
    // Waits until the last `window` answers all come from `side`; returns how long that took.
    const follows = async (side: string, window = 20) => {
      const start = Date.now();
      while (Date.now() - start < 15_000) {
        const recent = loop.outcomes.filter((o) => o.at > start).slice(-window);
        if (recent.length === window && recent.every((o) => o.servedBy === side)) return Date.now() - start;
        await sleep(50);
      }
      throw new Error(`traffic did not move to ${side}; last answers: ${JSON.stringify(loop.outcomes.slice(-5))}\n${tail(envoy.log(), 30)}`);
    };

    await sleep(500);
    assert.ok(loop.outcomes.length > 0 && loop.outcomes.every((o) => o.servedBy === "primary"), "at 0% every answer is the primary's");

    await publish(split(100));
    const toCanary = await follows("canary");
    await publish(split(0));
    const toPrimary = await follows("primary");
    console.log(`canary 0% -> 100% followed in ${toCanary} ms, 100% -> 0% in ${toPrimary} ms`);

    // A configuration the plugin refuses: rejected as a whole, the 0% one keeps serving.
    await publish({ rules: [{ name: "rollout", weights: { primary: 50, canary: 60 } }] });
    const deadline = Date.now() + 10_000;
    while ((await stat(envoy, "listener_manager.lds.update_rejected")) < 1 && Date.now() < deadline) await sleep(50);
    assert.equal(await stat(envoy, "listener_manager.lds.update_rejected"), 1);
    assert.match(envoy.log(), /llm-router\[\d+\]: invalid configuration, refusing to start: rules\[0\]\.weights: must add up to 100, got 110/);
    const afterReject = Date.now();
    await sleep(500);

    await loop.stop();
    const outcomes = loop.outcomes;
    const failed = outcomes.filter((o) => o.status !== 200);
    assert.deepEqual(failed, [], `${failed.length} of ${outcomes.length} requests failed`);
    assert.ok(outcomes.filter((o) => o.at > afterReject).every((o) => o.servedBy === "primary"));
    assert.ok(outcomes.some((o) => o.servedBy === "canary"));
    console.log(`${outcomes.length} requests during the switches, none failed`);
    // Same process, two accepted listener updates after the first.
    assert.equal(envoy.pid, pid);
    assert.equal(await stat(envoy, "listener_manager.lds.update_success"), 3);
    // Every decision reached Envoy's counters, those held by the roots the updates replaced too
    // (the filters send counts in batches; a root takes what is held to Envoy as it goes).
    const served = (side: string) => outcomes.filter((o) => o.servedBy === side).length;
    await statsSettleAt(envoy, { [decisions("primary")]: served("primary"), [decisions("canary")]: served("canary") });
  } finally {
    await loop.stop();
    await envoy.stop();
    if (!process.env.KEEP_TMP) {
      rmSync(xdsDir, { recursive: true, force: true });
      rmSync(envoy.tmpDir, { recursive: true, force: true });
    }
  }
});
