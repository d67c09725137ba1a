// llm-admission's hold_headers where the Wasm filter lacks allow_on_headers_stop_iteration
// (envoy/hold-headers.yaml), as where Istio's hold-headers EnvoyFilter did not apply: Envoy turns the
// header pause into a full stop and never hands the filter the body. The filter must let a held
// request go on within hold_headers_timeout_ms as with hold_headers false (still refusing and
// clamping from the body), count it, say once what to fix, and hold no later request; the same in
// the one module. Where the flag is there, a client slow to send its body is let go the same way,
// but that proves nothing is missing: no warning, and later requests are held again. The whole chain
// without the flag on any filter (envoy/hold-headers-chain.yaml, as in Istio, where throttle and router
// never get it): throttle and router, which hold the headers to read the body when admission's facts
// are not there, let them go the same way and decide from the body; nothing waits for Envoy's timeouts.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe } from "node:test";
import { type EnvoyHandle, envoyTest } from "../tooling/envoy.ts";
import { postJson } from "../tooling/http.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { asOneModule } from "../tooling/one-module.ts";
import { settlesAt } from "../tooling/stats.ts";

const TIMEOUT_MS = 1000;
const hello = [{ role: "user", content: "Say hello to the mesh." }];
const long = [{ role: "user", content: "The quick brown fox jumps over the lazy dog. ".repeat(40) }];

/** hold_headers with the default timeout; the default model limits clamp, so content-length must go when a request is let go. */
const config = {
  hold_headers: true,
  models: { default: { max_prompt_tokens: 200, max_output_tokens: 512, output_limit_action: "clamp" }, "gpt-4o": {} },
};

const WARNING = /llm-admission\[\d+\]: hold_headers is on, but Envoy does not hand this filter the body/g;

async function timed<T>(work: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await work();
  return [result, performance.now() - start];
}

/** A Prometheus counter as scraped from Envoy's admin; undefined when Envoy has no such stat. */
async function scraped(envoy: EnvoyHandle, name: string): Promise<number | undefined> {
  const text = await (await fetch(envoy.adminUrl("/stats/prometheus"))).text();
  const line = new RegExp(`^${name}(?:\\{\\})? (\\d+)$`, "m").exec(text);
  return line ? Number(line[1]) : undefined;
}

/** Admission's let-go counter. */
const scrapedTimeouts = (envoy: EnvoyHandle) => scraped(envoy, "llm_admission_hold_headers_timeouts_total");

/** A request whose body follows its headers only after `pauseMs`; resolves with the status line's code. */
function slowBody(port: number, body: string, pauseMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1" }, () => {
      socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`);
      setTimeout(() => socket.write(body), pauseMs);
    });
    let received = "";
    socket.on("data", (chunk) => (received += chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(received);
      status ? resolve(Number(status[1])) : reject(new Error(`no response: ${JSON.stringify(received)}`));
    });
  });
}

describe("hold_headers without allow_on_headers_stop_iteration", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());

  for (const [label, edit] of [["llm-admission", undefined], ["one module", asOneModule]] as const) {
    const scenario = () => ({ scenario: "hold-headers", vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: config }, concurrency: 1, edit });

    envoyTest(`${label}: held requests go on after the timeout, still refused or clamped, and later ones are not held`, scenario, async (envoy, t) => {
      mock.reset();
      const url = envoy.url("/v1/chat/completions");
      // Two requests held at once: both go on at the first timeout, well before the 60 s route timeout.
      const [[clamped, refused], waited] = await timed(() =>
        Promise.all([postJson(url, { model: "gpt-4o", messages: hello, max_tokens: 99999 }), postJson(url, { model: "gpt-4o", messages: long })]),
      );
      assert.equal(clamped.status, 200, clamped.text);
      assert.equal(refused.status, 413, refused.text);
      assert.equal(refused.json.error.code, "context_length_exceeded");
      assert.ok(waited >= TIMEOUT_MS - 50 && waited < 3000, `the held requests took ${waited.toFixed(0)} ms`);
      t.diagnostic(`two requests held together: answered after ${waited.toFixed(0)} ms`);
      // As with hold_headers false: the headers went first, without the facts, and without a length the clamp would have made wrong.
      const upstream = mock.requests.filter((r) => r.json?.max_tokens !== undefined);
      assert.equal(upstream.length, 1);
      assert.equal(upstream[0].json.max_tokens, 512);
      assert.equal(upstream[0].headers["x-llm-model"], undefined);
      assert.equal(upstream[0].headers["content-length"], undefined);

      // Later requests are not held at all.
      const later: Array<[object, number]> = [[{ model: "gpt-4o", messages: hello }, 200], [{ model: "gpt-4o", messages: long }, 413], [{ model: "gpt-9", messages: hello }, 400]];
      const took: number[] = [];
      for (const [body, status] of later) {
        const [res, ms] = await timed(() => postJson(url, body));
        assert.equal(res.status, status, res.text);
        assert.ok(ms < 500, `a request after the first timeout took ${ms.toFixed(0)} ms`);
        took.push(ms);
      }
      t.diagnostic(`later requests answered after ${took.map((ms) => ms.toFixed(0)).join(", ")} ms`);

      await settlesAt(() => scrapedTimeouts(envoy), 2, "both held requests counted, none after");
      const warnings = envoy.log().match(WARNING) ?? [];
      assert.equal(warnings.length, 1, "warned once");
      assert.match(envoy.log(), /set allow_on_headers_stop_iteration: true on the Wasm filter.*k8s\/base\/hold-headers-envoyfilter\.yaml.*set hold_headers: false/);
    });
  }
});

describe("hold_headers with allow_on_headers_stop_iteration", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());

  for (const [label, edit] of [["llm-admission", undefined], ["one module", asOneModule]] as const) {
    const scenario = () => ({
      scenario: "admission",
      vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: { ...config, hold_headers_timeout_ms: 300 } },
      concurrency: 1,
      edit,
    });

    envoyTest(`${label}: a client slow to send its body is let go at the timeout, and holding goes on`, scenario, async (envoy, t) => {
      mock.reset();
      const [status, took] = await timed(() => slowBody(envoy.ports.LISTEN_PORT, JSON.stringify({ model: "gpt-4o", messages: hello }), 1000));
      assert.equal(status, 200);
      assert.ok(took >= 1000 && took < 3000, `the slow request took ${took.toFixed(0)} ms`);
      t.diagnostic(`a body sent 1000 ms after its headers: answered after ${took.toFixed(0)} ms`);
      assert.equal(mock.requests[0].headers["x-llm-model"], undefined, "let go before its body came");
      await settlesAt(() => scrapedTimeouts(envoy), 1, "the let-go request counted");

      // Envoy received no body for it, so nothing says the flag is missing: the next request is held, and gets its facts forwarded.
      const res = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello });
      assert.equal(res.status, 200, res.text);
      assert.equal(mock.requests[1].headers["x-llm-model"], "gpt-4o");
      await settlesAt(() => scrapedTimeouts(envoy), 1, "the held request that got its body is not counted");
      assert.equal((envoy.log().match(WARNING) ?? []).length, 0, "no warning where the flag is there");
    });
  }
});

describe("the whole chain without allow_on_headers_stop_iteration on any filter", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());

  const CHAIN_TIMEOUT_MS = 400;
  const chainConfigs = {
    ADMISSION_CONFIG: { hold_headers: true, hold_headers_timeout_ms: CHAIN_TIMEOUT_MS, models: { default: { max_prompt_tokens: 200 } } },
    THROTTLE_CONFIG: {
      hold_headers_timeout_ms: CHAIN_TIMEOUT_MS,
      rules: [
        { name: "per-tenant", match: { headers: [{ name: "x-tenant", exact: "acme" }] }, key: ["header:x-tenant"], limits: { tokens_per_minute: 3000 } },
        {
          name: "burst",
          match: { headers: [{ name: "x-tenant", exact: "burst" }] },
          key: ["global"],
          limits: { requests_per_second: 1 },
          action: "redirect",
          redirect: { header: "x-llm-route", value: "canary" },
        },
      ],
    },
    METRICS_CONFIG: { tenant_header: "x-tenant" },
    ROUTER_CONFIG: {
      hold_headers_timeout_ms: CHAIN_TIMEOUT_MS,
      targets: { primary: {}, canary: {} },
      rules: [{ name: "mini-to-canary", match: { models: ["gpt-4o-mini"] }, target: "canary" }],
    },
  };
  const warnings = {
    admission: /llm-admission\[\d+\]: hold_headers is on, but Envoy does not hand this filter the body/g,
    throttle: /llm-throttle\[\d+\]: llm-admission's facts did not come with the request headers, so this filter held them.*set allow_on_headers_stop_iteration: true on llm-throttle's Wasm filter/g,
    router: /llm-router\[\d+\]: the router held the request headers to read the model from the body.*set allow_on_headers_stop_iteration: true on llm-router's Wasm filter/g,
    redirect: /llm-throttle\[\d+\]: rule burst: a request over its limit had its headers upstream already, so it cannot be redirected/g,
  };

  // Four filters: each holds in turn and finds out for itself (its own counter counts the first
  // request). One module: one Envoy filter, so what admission found out stops throttle and router
  // holding before they see the first request (their counters stay 0; each still says so once).
  for (const [label, edit, heldBy] of [
    ["four filters", undefined, { admission: 1, throttle: 1, router: 1 }],
    ["one module", asOneModule, { admission: 1, throttle: 0, router: 0 }],
  ] as const) {
    const scenario = () => ({ scenario: "hold-headers-chain", vars: { UPSTREAM_PORT: mock.port, ...chainConfigs }, concurrency: 1, edit });

    envoyTest(`${label}: admitted, oversize and over-budget requests are answered without waiting for a body Envoy keeps back`, scenario, async (envoy, t) => {
      mock.reset();
      const url = envoy.url("/v1/chat/completions");
      const acme = { "x-tenant": "acme" };
      // Each filter holds at most one request before it finds out: the first is held by admission
      // and then throttle (router then has admission's facts, read from the body on the way); the
      // second, with neither holding any more, by the router. In the one module admission's finding
      // stops the other stages at once.
      const warmUp: number[] = [];
      for (let i = 0; i < 2; i++) {
        const [res, ms] = await timed(() => postJson(url, { model: "gpt-4o-mini", messages: hello, max_tokens: 50 }, acme));
        assert.equal(res.status, 200, res.text);
        assert.ok(ms < 2 * (CHAIN_TIMEOUT_MS + 250) + 500, `request ${i + 1} took ${ms.toFixed(0)} ms`);
        warmUp.push(ms);
      }
      // The second went on without its model: the rule on it could not apply.
      assert.equal(mock.requests[1].headers["x-llm-route"], "primary");

      const later: Array<[string, object, Record<string, string>, number]> = [
        ["admitted", { model: "gpt-4o", messages: hello, max_tokens: 50 }, acme, 200],
        ["over admission's prompt limit", { model: "gpt-4o", messages: long }, acme, 413],
        ["over the tenant's token budget", { model: "gpt-4o", messages: hello, max_tokens: 2999 }, acme, 429],
        ["first of its second", { model: "gpt-4o", messages: hello }, { "x-tenant": "burst" }, 200],
        ["over a redirect rule's limit", { model: "gpt-4o", messages: hello }, { "x-tenant": "burst" }, 429],
        ["over it again", { model: "gpt-4o", messages: hello }, { "x-tenant": "burst" }, 429],
      ];
      const took: string[] = [];
      for (const [what, body, headers, status] of later) {
        const [res, ms] = await timed(() => postJson(url, body, headers));
        assert.equal(res.status, status, `${what}: ${res.text}`);
        assert.ok(ms < 500, `${what}: took ${ms.toFixed(0)} ms`);
        took.push(ms.toFixed(0));
      }
      t.diagnostic(`first two requests answered after ${warmUp.map((ms) => ms.toFixed(0)).join(", ")} ms, later ones after ${took.join(", ")} ms`);

      const letGo = async () => Object.fromEntries(await Promise.all(Object.keys(heldBy).map(async (filter) => [filter, await scraped(envoy, `llm_${filter}_hold_headers_timeouts_total`)])));
      await settlesAt(letGo, heldBy, "each filter's let-go counter");
      for (const filter of ["admission", "throttle", "router"] as const) {
        assert.equal((envoy.log().match(warnings[filter]) ?? []).length, 1, `${filter} warned once`);
      }
      assert.equal((envoy.log().match(warnings.redirect) ?? []).length, 1, "the redirect rule warned once");
    });
  }
});
