// The router filter in the real Envoy, in front of three mock model servers (primary, canary and a
// shadow candidate): header and model rules, sticky weights, body rewrites, header stripping, the
// rollout guard, shadow records with the report tool, and refused configs. The hot reload over
// filesystem xDS is in test/router-reload.test.ts.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { accessLog, mirrored } from "../tooling/access-log.ts";
import { type EnvoyHandle, envoyTest, startEnvoy } from "../tooling/envoy.ts";
import { type HttpResult, postJson, rawHttp, readSse } from "../tooling/http.ts";
import { type RecordedRequest } from "../tooling/mock-llm.ts";
import { useModelMocks } from "../tooling/model-mocks.ts";
import { statSettlesAt } from "../tooling/stats.ts";

const hello = [{ role: "user", content: "Say hello to the mesh." }];
const chat = (model: string, extra: object = {}) => ({ model, messages: hello, max_tokens: 8, ...extra });
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Sends `count` requests, `parallel` at a time; `make(i)` gives each one's body and headers. */
async function sendMany(url: string, count: number, parallel: number, make: (i: number) => [object, Record<string, string>]): Promise<HttpResult[]> {
  const results: HttpResult[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        const i = next++;
        const [body, headers] = make(i);
        results[i] = await postJson(url, body, headers);
      }
    }),
  );
  return results;
}

const servedBy = (res: HttpResult) => res.headers["x-mock-served-by"];
/** The model a mock was asked for. */
const sentModel = (request: RecordedRequest) => (request.json as { model?: unknown } | undefined)?.model;
/** Waits until a router counter of one target settles at `value` (the target travels in the name, as llm-mesh metrics carry labels). */
function counterSettlesAt(envoy: EnvoyHandle, name: string, target: string, value: number): Promise<void> {
  return statSettlesAt(envoy, `wasmcustom.${name}llm_target=.=${target};.;`, value);
}

describe("llm-router", () => {
  const mocks = useModelMocks();
  const resetMocks = () => {
    for (const mock of mocks.all()) {
      mock.reset();
      mock.setDefault({});
    }
  };

  const withAdmission = (config: object) => () => ({
    scenario: "router",
    vars: { ...mocks.ports(), ROUTER_CONFIG: config, ADMISSION_CONFIG: { hold_headers: true } },
  });
  const alone = (config: object, concurrency = 2) => () => ({
    scenario: "router-alone",
    vars: { UPSTREAM_PORT: mocks.primary.port, CANARY_PORT: mocks.canary.port, ROUTER_CONFIG: config },
    concurrency,
  });

  const headerRules = {
    rules: [
      { name: "testers", match: { headers: [{ name: "x-llm-tester", present: true }] }, trust_client_route: true },
      { name: "beta", match: { headers: [{ name: "x-user-group", exact: "beta" }, { name: "x-region", prefix: "eu-" }] }, target: "canary" },
      { name: "no-tenant", match: { headers: [{ name: "x-tenant", present: false }] }, target: "canary" },
    ],
  };

  envoyTest("routes on headers (exact, prefix, present, absent), the first matching rule deciding", withAdmission(headerRules), async (envoy) => {
    resetMocks();
    const url = envoy.url("/v1/chat/completions");
    const tenant = { "x-tenant": "acme" };
    const cases: [Record<string, string>, string][] = [
      [tenant, "primary"],
      [{ ...tenant, "x-user-group": "beta", "x-region": "eu-west-1" }, "canary"],
      [{ ...tenant, "x-user-group": "beta", "x-region": "us-east-1" }, "primary"],
      [{ ...tenant, "x-user-group": "beta-2", "x-region": "eu-west-1" }, "primary"],
      [{}, "canary"],
    ];
    for (const [headers, side] of cases) {
      const res = await postJson(url, chat("gpt-4o"), headers);
      assert.equal(res.status, 200, res.text);
      assert.equal(servedBy(res), side, JSON.stringify(headers));
    }
    // The upstream sees the router's decision in the routing header.
    assert.equal(mocks.primary.requests[0].headers["x-llm-route"], "primary");
    assert.equal(mocks.canary.requests[0].headers["x-llm-route"], "canary");
    const log = await accessLog(envoy, cases.length, (e) => !mirrored(e));
    assert.deepEqual(log.map((e) => e.router), [
      "target=primary by=default",
      "target=canary by=outright rule=beta",
      "target=primary by=default",
      "target=primary by=default",
      "target=canary by=outright rule=no-tenant",
    ]);
    assert.deepEqual(log.map((e) => e.route), ["primary", "canary", "primary", "primary", "canary"]);
    await counterSettlesAt(envoy, "llm_router_requests_total", "canary", 2);
  });

  envoyTest("removes a client's routing header unless a rule trusts it", withAdmission(headerRules), async (envoy) => {
    resetMocks();
    const url = envoy.url("/v1/chat/completions");
    const forged = await postJson(url, chat("gpt-4o"), { "x-tenant": "acme", "x-llm-route": "canary" });
    assert.equal(servedBy(forged), "primary");
    assert.equal(mocks.primary.requests.at(-1)!.headers["x-llm-route"], "primary");

    const tester = await postJson(url, chat("gpt-4o"), { "x-tenant": "acme", "x-llm-tester": "1", "x-llm-route": "canary" });
    assert.equal(servedBy(tester), "canary");
    // A trusting rule with a name it does not know falls through to the next rules.
    const unknown = await postJson(url, chat("gpt-4o"), { "x-tenant": "acme", "x-llm-tester": "1", "x-llm-route": "blue" });
    assert.equal(servedBy(unknown), "primary");
    assert.equal(mocks.primary.requests.at(-1)!.headers["x-llm-route"], "primary");
  });

  const modelRules = {
    targets: { primary: {}, canary: { rewrite_model: "gpt-4o-2024-11-20" } },
    model_header: "x-llm-upstream-model",
    rules: [{ name: "gpt-4o-to-canary", match: { models: ["gpt-4o"] }, target: "canary" }],
  };

  envoyTest("routes on the model from the admission filter's facts and rewrites it in the body", withAdmission(modelRules), async (envoy) => {
    resetMocks();
    const body = { model: "gpt-4o", messages: [{ role: "user", content: "Naïve café — \"quoted\" ✓" }], max_tokens: 8, temperature: 0.5 };
    const res = await postJson(envoy.url("/v1/chat/completions"), body);
    assert.equal(res.status, 200, res.text);
    assert.equal(servedBy(res), "canary");
    assert.equal(res.json.model, "gpt-4o-2024-11-20");
    const seen = mocks.canary.requests[0];
    assert.deepEqual(seen.json, { ...body, model: "gpt-4o-2024-11-20" });
    assert.equal(Number(seen.headers["content-length"]), Buffer.byteLength(seen.body));
    assert.equal(seen.headers["x-llm-upstream-model"], "gpt-4o-2024-11-20");
    // The admission filter's own header still names what the client asked for.
    assert.equal(seen.headers["x-llm-model"], "gpt-4o");

    const streamed = await postJson(envoy.url("/v1/chat/completions"), chat("gpt-4o", { stream: true }));
    assert.equal(streamed.status, 200);
    assert.equal(readSse(streamed.text).at(-1)!.data, "[DONE]");
    assert.equal(sentModel(mocks.canary.requests[1]), "gpt-4o-2024-11-20");

    const other = await postJson(envoy.url("/v1/chat/completions"), chat("gpt-4o-mini"));
    assert.equal(servedBy(other), "primary");
    assert.equal(sentModel(mocks.primary.requests[0]), "gpt-4o-mini");
    assert.equal(mocks.primary.requests[0].headers["x-llm-upstream-model"], "gpt-4o-mini");
  });

  envoyTest("without the admission filter it reads the body itself, also when it arrives in chunks", alone(modelRules), async (envoy) => {
    resetMocks();
    const json = await postJson(envoy.url("/v1/messages"), { model: "gpt-4o", max_tokens: 5, messages: hello });
    assert.equal(servedBy(json), "canary");
    assert.equal(sentModel(mocks.canary.requests[0]), "gpt-4o-2024-11-20");
    assert.equal(Number(mocks.canary.requests[0].headers["content-length"]), Buffer.byteLength(mocks.canary.requests[0].body));

    const text = JSON.stringify(chat("gpt-4o"));
    const half = Math.floor(text.length / 2);
    const chunked = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n` +
      `${half.toString(16)}\r\n${text.slice(0, half)}\r\n${(text.length - half).toString(16)}\r\n${text.slice(half)}\r\n0\r\n\r\n`;
    const raw = await rawHttp(envoy.ports.LISTEN_PORT, chunked, { timeoutMs: 3000 });
    assert.match(raw, /^HTTP\/1\.1 200/);
    assert.match(raw, /x-mock-served-by: canary/);
    assert.equal(sentModel(mocks.canary.requests[1]), "gpt-4o-2024-11-20");

    // Not an LLM API call: routed on headers alone, nothing held.
    const models = await fetch(envoy.url("/v1/models"));
    assert.equal(models.status, 200);
    assert.equal(models.headers.get("x-mock-served-by"), "primary");
  });

  envoyTest("routes a body over max_body_bytes without its model, and leaves bodies it cannot read alone", alone({ ...modelRules, max_body_bytes: 300 }), async (envoy) => {
    resetMocks();
    const big = chat("gpt-4o", { messages: [{ role: "user", content: "x".repeat(400) }] });
    const res = await postJson(envoy.url("/v1/chat/completions"), big);
    assert.equal(res.status, 200, res.text);
    assert.equal(servedBy(res), "primary");
    assert.equal(sentModel(mocks.primary.requests[0]), "gpt-4o");
    // Two models: ambiguous, so neither routed on nor rewritten.
    const twice = await postJson(envoy.url("/v1/chat/completions"), '{"model":"gpt-4o","messages":[],"model":"gpt-4o"}');
    assert.equal(servedBy(twice), "primary");
    assert.equal(mocks.primary.requests[1].body, '{"model":"gpt-4o","messages":[],"model":"gpt-4o"}');
  });

  test("keeps each user on one side and splits users by the weights", { timeout: 120_000 }, async () => {
    const weights = { primary: 70, canary: 30 };
    const envoy = await startEnvoy(alone({ sticky_header: "x-user-id", rules: [{ name: "split", weights }] })());
    try {
      resetMocks();
      const url = envoy.url("/v1/chat/completions");
      const users = 1000;
      const first = await sendMany(url, users, 16, (i) => [chat("gpt-4o"), { "x-user-id": `user-${i}` }]);
      assert.ok(first.every((r) => r.status === 200));
      const side = first.map(servedBy);
      const share = side.filter((s) => s === "canary").length / users;
      console.log(`sticky split: ${(share * 100).toFixed(1)}% of ${users} users on the canary (weight 30%)`);
      assert.ok(Math.abs(share - 0.3) < 0.04, `canary share ${share}`);
      // The same users again, in another order and over other connections: every one on its side.
      const again = await sendMany(url, 300, 8, (i) => [chat("gpt-4o"), { "x-user-id": `user-${(i * 7) % users}` }]);
      again.forEach((res, i) => assert.equal(servedBy(res), side[(i * 7) % users], `user-${(i * 7) % users}`));

      // Without the key header the split is random, by the same weights.
      const anonymous = await sendMany(url, 400, 16, () => [chat("gpt-4o"), {}]);
      const randomShare = anonymous.filter((r) => servedBy(r) === "canary").length / anonymous.length;
      console.log(`random split: ${(randomShare * 100).toFixed(1)}% of 400 requests on the canary (weight 30%)`);
      assert.ok(Math.abs(randomShare - 0.3) < 0.08, `random canary share ${randomShare}`);
      const log = await accessLog(envoy, users + 700);
      assert.equal(log.filter((e) => e.router === "target=canary by=sticky rule=split").length, side.filter((s) => s === "canary").length + again.filter((r) => servedBy(r) === "canary").length);
    } finally {
      await envoy.stop();
    }
  });

  const guarded = {
    targets: {
      primary: {},
      canary: { guard: { window_ms: 5000, min_requests: 4, max_error_rate: 0.5, cooldown_ms: 2000 } },
    },
    rules: [{ name: "half", weights: { primary: 50, canary: 50 } }],
  };

  envoyTest("a failing canary loses its traffic within the window and gets it back after the cool-down", alone(guarded), async (envoy) => {
    resetMocks();
    mocks.canary.setDefault({ status: 500 });
    const url = envoy.url("/v1/chat/completions");
    let failures = 0;
    let sent = 0;
    const tripped = envoy.waitForLog(/llm-router\[\d+\]: guard of target "canary" tripped: error rate 100% over 4 requests is above max_error_rate 50%; sending its traffic to "primary" for 2000 ms/, 20_000);
    // Four failed canary requests trip the guard; sequential requests make the count exact.
    while (failures < 4) {
      const res = await postJson(url, chat("gpt-4o"));
      sent++;
      if (res.status === 500) failures++;
      assert.ok(sent < 60, "the canary never got four requests");
    }
    await tripped;
    const during = await sendMany(url, 40, 4, () => [chat("gpt-4o"), {}]);
    assert.deepEqual([...new Set(during.map(servedBy))], ["primary"]);
    assert.ok(during.every((r) => r.status === 200));
    await counterSettlesAt(envoy, "llm_router_guard_trips_total", "canary", 1);

    mocks.canary.setDefault({});
    await sleep(2100);
    const reopened = envoy.waitForLog(/guard of target "canary": cool-down over, sending it traffic again/, 5000);
    const after = await sendMany(url, 40, 4, () => [chat("gpt-4o"), {}]);
    await reopened;
    const onCanary = after.filter((r) => servedBy(r) === "canary").length;
    assert.ok(onCanary >= 8 && onCanary <= 32, `canary got ${onCanary} of 40 after the cool-down`);
    assert.ok(after.every((r) => r.status === 200));
    // Logged once per trip, by the one worker whose write tripped it.
    assert.equal(envoy.log().match(/tripped: error rate/g)!.length, 1);
    const log = await accessLog(envoy, sent + 80);
    assert.ok(log.some((e) => e.router === "target=primary by=random rule=half guarded=canary"));
  });

  envoyTest("connection resets, answers cut off and timeouts count as failures too", alone({
    targets: { primary: {}, canary: { guard: { window_ms: 20000, min_requests: 4, max_error_rate: 0.5, cooldown_ms: 60000 } } },
    rules: [{ name: "all-canary", weights: { canary: 100 } }],
  }), async (envoy) => {
    resetMocks();
    const url = envoy.url("/v1/chat/completions");
    const reset = await postJson(url, chat("gpt-4o"), { "x-mock-reset-after": "0" });
    assert.equal(reset.status, 503);
    const body = JSON.stringify(chat("gpt-4o"));
    const cut = await rawHttp(envoy.ports.LISTEN_PORT, `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-mock-reset-after: 20\r\ncontent-length: ${body.length}\r\n\r\n${body}`, { timeoutMs: 3000 });
    assert.match(cut, /^HTTP\/1\.1 200/);
    // The canary route's timeout is 2 s (envoy/router-alone.yaml).
    const slow = { "x-mock-latency-ms": "2500" };
    const timeouts = await Promise.all([postJson(url, chat("gpt-4o"), slow), postJson(url, chat("gpt-4o"), slow)]);
    assert.deepEqual(timeouts.map((r) => r.status), [504, 504]);
    await envoy.waitForLog(/guard of target "canary" tripped: error rate 100% over 4 requests/, 5000);
    assert.equal(servedBy(await postJson(url, chat("gpt-4o"))), "primary");
  });

  envoyTest("a slow canary trips the latency threshold", alone({
    targets: { primary: {}, canary: { guard: { window_ms: 10000, min_requests: 3, max_error_rate: 1, max_mean_latency_ms: 150, cooldown_ms: 60000 } } },
    rules: [{ name: "all-canary", weights: { canary: 100 } }],
  }), async (envoy) => {
    resetMocks();
    mocks.canary.setDefault({ latencyMs: 300 });
    const url = envoy.url("/v1/chat/completions");
    for (let i = 0; i < 3; i++) assert.equal(servedBy(await postJson(url, chat("gpt-4o"))), "canary");
    await envoy.waitForLog(/guard of target "canary" tripped: mean latency 3\d\d ms over 3 requests is above max_mean_latency_ms 150/, 5000);
    assert.equal(servedBy(await postJson(url, chat("gpt-4o"))), "primary");
  });

  const shadowConfig = {
    shadow: { rewrite_model: "gpt-4o-mini" },
    record: { enabled: true, log: true, preview_chars: 24 },
  };

  envoyTest("mirrors to a shadow that records its side, and the report compares both", withAdmission(shadowConfig), async (envoy) => {
    resetMocks();
    // The shadow answers 5 tokens unless told otherwise; requests that ask for 5 get the same answer.
    mocks.shadow.setDefault({ completionTokens: 5 });
    const url = envoy.url("/v1/chat/completions");
    const same = { "x-mock-completion-tokens": "5" };
    const plan: Record<string, string>[] = [same, {}, same, same, {}, same];
    for (const headers of plan) {
      const res = await postJson(url, chat("gpt-4o", { max_tokens: 12 }), headers);
      assert.equal(res.status, 200, res.text);
      assert.equal(servedBy(res), "primary");
    }
    const log = await accessLog(envoy, plan.length * 2);
    const shadowSide = log.filter(mirrored);
    assert.equal(shadowSide.length, plan.length);
    assert.ok(shadowSide.every((e) => e.route === "shadow" && e.router === "target=shadow" && e.upstream_cluster === "shadow_model"));
    assert.equal(mocks.shadow.requests.length, plan.length);
    assert.ok(mocks.shadow.requests.every((r) => sentModel(r) === "gpt-4o-mini" && r.authority.includes("-shadow")));

    const primaryRecord = JSON.parse(log.find((e) => !mirrored(e)).record);
    assert.equal(primaryRecord.side, "primary");
    assert.equal(primaryRecord.model, "gpt-4o");
    assert.equal(primaryRecord.response_model, "gpt-4o");
    assert.equal(primaryRecord.status, 200);
    assert.equal(primaryRecord.completion_tokens, 5);
    assert.equal(primaryRecord.usage, "reported");
    assert.ok(primaryRecord.prompt_tokens > 0 && primaryRecord.bytes > 0 && primaryRecord.latency_ms >= 0);
    assert.match(primaryRecord.answer_hash, /^[0-9a-f]{16}$/);
    assert.equal(primaryRecord.preview, " the mesh routes every r");
    const shadowRecord = JSON.parse(shadowSide[0].record);
    assert.equal(shadowRecord.id, shadowSide[0].request_id);
    assert.equal(shadowRecord.upstream_model, "gpt-4o-mini");
    assert.equal(shadowRecord.response_model, "gpt-4o-mini");

    const prices = join(envoy.tmpDir, "prices.json");
    writeFileSync(prices, JSON.stringify({ "gpt-4o": { input: 2.5, output: 10 } }));
    const report = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "scripts/shadow-report.ts", ...args], { cwd: repoDir, encoding: "utf8" });
    const accessLogPath = join(envoy.tmpDir, "access.log");
    const json = report("--json", "--prices", prices, "--price", "gpt-4o-mini*=0.15,0.6", accessLogPath);
    assert.equal(json.status, 0, json.stderr);
    const result = JSON.parse(json.stdout);
    assert.equal(result.pairs, plan.length);
    assert.equal(result.compared, plan.length);
    assert.equal(result.agreed, 4);
    assert.deepEqual(result.served.models, ["gpt-4o"]);
    assert.deepEqual(result.shadow.models, ["gpt-4o-mini"]);
    assert.equal(result.served.completionTokensPerRequest, (4 * 5 + 2 * 12) / 6);
    assert.equal(result.shadow.completionTokensPerRequest, 5);
    const promptTokens = primaryRecord.prompt_tokens;
    assert.ok(Math.abs(result.shadow.costPerRequest - (promptTokens * 0.15 + 5 * 0.6) / 1e6) < 1e-12);
    assert.ok(result.costRatio > 0 && result.costRatio < 0.1);
    assert.equal(result.disagreements.length, 2);

    // The same records from Envoy's own log (record.log), printed for people.
    const text = report("--price", "gpt-4o=2.5,10", "--price", "gpt-4o-mini=0.15,0.6", envoy.logPath);
    assert.equal(text.status, 0, text.stderr);
    console.log(text.stdout);
    assert.match(text.stdout, /^Shadow comparison: 6 requests seen on both sides \(0 served only, 0 shadow only\)/);
    assert.match(text.stdout, /answers agree: 4 of 6 \(66\.7%\)/);
    assert.match(text.stdout, /shadow cost: +\d+\.\d% of the served cost/);
  });

  envoyTest("leaves a request the throttle redirected to a fallback where the throttle sent it", () => ({
    scenario: "router-throttle",
    vars: {
      UPSTREAM_PORT: mocks.primary.port,
      CANARY_PORT: mocks.canary.port,
      FALLBACK_PORT: mocks.shadow.port,
      ROUTER_CONFIG: { rules: [{ name: "all-canary", target: "canary" }] },
      THROTTLE_CONFIG: {
        rules: [{ name: "per-tenant", key: ["header:x-tenant"], limits: { requests_per_second: 1 }, action: "redirect", redirect: { header: "x-llm-fallback", value: "overflow" } }],
      },
    },
  }), async (envoy) => {
    resetMocks();
    const url = envoy.url("/v1/chat/completions");
    const tenant = { "x-tenant": "acme" };
    assert.equal(servedBy(await postJson(url, chat("gpt-4o"), tenant)), "canary");
    const over = await postJson(url, chat("gpt-4o"), tenant);
    assert.equal(over.status, 200, over.text);
    assert.equal(servedBy(over), "shadow");
    assert.equal(mocks.shadow.requests[0].headers["x-llm-route"], undefined);
    const log = await accessLog(envoy, 2);
    assert.deepEqual(log.map((e) => [e.route, e.router]), [["canary", "target=canary by=outright rule=all-canary"], ["fallback", "target=fallback by=earlier-filter"]]);
    await counterSettlesAt(envoy, "llm_router_requests_total", "canary", 1);
  });

  test("Envoy refuses to start with a bad config, naming the field and the reason", async () => {
    await assert.rejects(
      startEnvoy({ scenario: "router-alone", vars: { UPSTREAM_PORT: 9, CANARY_PORT: 9, ROUTER_CONFIG: { rules: [{ name: "split", weights: { primary: 90, canary: 5 } }] } }, readyTimeoutMs: 15000 }),
      (error: Error) => {
        assert.match(error.message, /llm-router\[\d+\]: invalid configuration, refusing to start: rules\[0\]\.weights: must add up to 100, got 95/);
        return true;
      },
    );
  });
});
