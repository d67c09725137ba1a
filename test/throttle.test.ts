// The throttle filter in the real Envoy (2 workers), behind the admission filter, in front of a
// primary and a fallback mock model. One Envoy serves most tests: each test has its own rule
// (picked by the x-scenario header) and its own tenants, so their budgets never meet.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, envoyTest, startEnvoy } from "../tooling/envoy.ts";
import { type HttpResult, postJson, postPartial, readSse } from "../tooling/http.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { settledStat, stat, statSettlesAt, statsSettleAt, waitForStat } from "../tooling/stats.ts";

const admission = { hold_headers: true, unknown_model: "allow" };

const only = (scenario: string) => ({ headers: [{ name: "x-scenario", exact: scenario }] });
const perTenant = ["header:x-tenant"];

const rules = {
  tick_ms: 20,
  rules: [
    { name: "rps", match: only("rps"), key: perTenant, limits: { requests_per_second: 5 } },
    { name: "tpm", match: only("tpm"), key: perTenant, limits: { tokens_per_minute: 400 }, default_output_tokens: 100 },
    { name: "io", match: only("io"), key: perTenant, limits: { input_tokens_per_minute: 200, output_tokens_per_minute: 100 } },
    { name: "inflight", match: only("inflight"), key: perTenant, limits: { max_in_flight: 2 } },
    { name: "long", match: only("long"), key: perTenant, limits: { max_in_flight: 1 } },
    { name: "queue", match: only("queue"), key: perTenant, limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: 15000, max_length: 5 } },
    { name: "queue-short", match: only("queue-short"), key: perTenant, limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: 300, max_length: 1 } },
    { name: "queue-one", match: only("queue-one"), key: perTenant, limits: { max_in_flight: 1 }, action: "queue", queue: { max_wait_ms: 10000, max_length: 1 } },
    {
      name: "redirect", match: only("redirect"), key: perTenant, limits: { tokens_per_minute: 300 },
      action: "redirect", redirect: { header: "x-llm-fallback", value: "small" },
    },
    { name: "recon", match: only("recon"), key: perTenant, limits: { tokens_per_minute: 100000, max_in_flight: 50 } },
    { name: "accuracy", match: only("accuracy"), key: ["global"], limits: { tokens_per_minute: 3000 } },
    { name: "openai", match: only("openai"), key: perTenant, limits: { requests_per_second: 1 } },
    { name: "slots", match: only("slots"), key: perTenant, limits: { requests_per_second: 1 }, key_slots: 1 },
    { name: "anthropic-only", match: { ...only("models"), apis: ["anthropic.messages"], models: ["claude-*"] }, key: ["model"], limits: { requests_per_second: 1 } },
  ],
};

const hello = [{ role: "user", content: "Say hello to the mesh." }];
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

let envoy: EnvoyHandle;
let primary: MockLlm;
let fallback: MockLlm;

function chat(scenario: string, tenant: string, body: object, headers: Record<string, string> = {}): Promise<HttpResult> {
  return postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, ...body }, { "x-scenario": scenario, "x-tenant": tenant, ...headers });
}

/** A throttle stat's full name: Wasm stats are wasmcustom.<name>. */
const throttleStat = (name: string) => `wasmcustom.llm_throttle.${name}`;
/** Waits until a stat is `value` and stays so: the filter's counts reach Envoy in batches (tooling/stats.ts). */
const statSettles = (name: string, value: number) => statSettlesAt(envoy, throttleStat(name), value);
/** Waits until a stat reaches a state a request holds for a while (several flush periods). */
const statReaches = (name: string, value: number) => waitForStat(envoy, throttleStat(name), value);

/** Total real usage of a completed answer, JSON or SSE with include_usage. */
function usageOf(res: HttpResult): number {
  if (res.json?.usage) return res.json.usage.prompt_tokens + res.json.usage.completion_tokens;
  const last = readSse(res.text).filter((e) => e.data !== "[DONE]").map((e) => JSON.parse(e.data)).findLast((c) => c.usage);
  assert.ok(last, `no usage in ${res.text.slice(0, 200)}`);
  return last.usage.prompt_tokens + last.usage.completion_tokens;
}

/** The prompt estimate the admission filter forwarded for the n-th last upstream request. */
function estimateSent(mock: MockLlm, back = 1): number {
  return Number(mock.requests.at(-back)!.headers["x-llm-prompt-tokens"]);
}

/** A chat request on a connection of its own: Envoy hands new connections to either worker. */
function chatOnNewConnection(scenario: string, tenant: string, body: object): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify({ model: "gpt-4o", messages: hello, ...body });
    const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(data), "x-scenario": scenario, "x-tenant": tenant };
    const req = httpRequest(envoy.url("/v1/chat/completions"), { method: "POST", agent: false, headers }, (res) => {
      let text = "";
      res.on("data", (chunk: Buffer) => (text += chunk.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    req.end(data);
  });
}

/** A request with a Host header fetch will not send: the authority Envoy's mirroring gives shadow copies. */
function postWithHost(host: string, path: string, body: object, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = httpRequest(envoy.url(path), { method: "POST", headers: { host, "content-type": "application/json", "content-length": Buffer.byteLength(data), ...headers } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(data);
  });
}

describe("throttle filter", () => {
  before(async () => {
    primary = await startMockLlm({ name: "primary" });
    fallback = await startMockLlm({ name: "fallback" });
    envoy = await startEnvoy({
      scenario: "throttle",
      vars: { UPSTREAM_PORT: primary.port, FALLBACK_PORT: fallback.port, ADMISSION_CONFIG: admission, THROTTLE_CONFIG: rules },
      concurrency: 2,
    });
  });
  after(async () => {
    await envoy?.stop();
    await Promise.all([primary?.close(), fallback?.close()]);
    if (envoy && !process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
  });

  test("requests per second: a burst past the limit gets 429s in each API's shape, per tenant", async () => {
    const burst = await Promise.all(Array.from({ length: 9 }, () => chat("rps", "rps-a", { max_tokens: 5 })));
    const admitted = burst.filter((r) => r.status === 200);
    const refused = burst.filter((r) => r.status === 429);
    // 5 in the bucket; the burst may straddle a refill of one more.
    assert.ok(admitted.length >= 5 && admitted.length <= 6, `admitted ${admitted.length}`);
    assert.equal(refused.length, 9 - admitted.length);
    const r = refused[0];
    assert.equal(r.json.error.type, "rate_limit_error");
    assert.equal(r.json.error.code, "rate_limit_exceeded");
    assert.match(r.json.error.message, /^Rate limit reached for requests \(llm-throttle rule `rps`\): limit 5 per second\. Please try again in \d+ms\.$/);
    assert.equal(r.headers["retry-after"], "1");
    assert.equal(r.headers["x-ratelimit-limit-requests"], "5");
    assert.equal(r.headers["x-ratelimit-remaining-requests"], "0");
    for (const ok of admitted) {
      assert.equal(ok.headers["x-ratelimit-limit-requests"], "5");
      assert.ok(Number(ok.headers["x-ratelimit-remaining-requests"]) <= 4);
    }

    // Another tenant has its own bucket; an Anthropic stream is refused in Anthropic's shape.
    const other = await chat("rps", "rps-b", { max_tokens: 5 });
    assert.equal(other.status, 200);
    const streams = await Promise.all(Array.from({ length: 8 }, () =>
      postJson(envoy.url("/v1/messages"), { model: "claude-3-5-haiku", max_tokens: 5, stream: true, messages: hello }, { "x-scenario": "rps", "x-tenant": "rps-c" })));
    const streamRefused = streams.find((s) => s.status === 429)!;
    assert.ok(streamRefused, "an Anthropic request was refused");
    assert.equal(streamRefused.json.type, "error");
    assert.equal(streamRefused.json.error.type, "rate_limit_error");
    const streamed = streams.find((s) => s.status === 200)!;
    assert.equal(readSse(streamed.text).at(-1)!.event, "message_stop");
  });

  test("tokens per minute: reserves prompt + max_tokens, settles to real usage, refuses when the window is full", async () => {
    const tenant = "tpm-a";
    const first = await chat("tpm", tenant, { max_tokens: 300 });
    assert.equal(first.status, 200, first.text);
    const reserve1 = estimateSent(primary) + 300;
    assert.equal(Number(first.headers["x-ratelimit-remaining-tokens"]), 400 - reserve1);
    assert.equal(first.headers["x-ratelimit-limit-tokens"], "400");
    assert.match(first.headers["x-ratelimit-reset-tokens"], /^1m[0-5]?\d(\.\d+)?s$|^\d+(\.\d+)?s$/);
    const used1 = usageOf(first);
    await statSettles("tpm.in_flight", 0);

    // The refund: the second reservation sees only what the first really used.
    const second = await chat("tpm", tenant, { max_tokens: 300, stream: true, stream_options: { include_usage: true } });
    assert.equal(second.status, 200);
    const reserve2 = estimateSent(primary) + 300;
    assert.equal(Number(second.headers["x-ratelimit-remaining-tokens"]), 400 - used1 - reserve2);
    const used2 = usageOf(second);
    await statSettles("tpm.in_flight", 0);

    // Without max_tokens the rule's default output (100) is reserved.
    const third = await chat("tpm", tenant, {});
    assert.equal(third.status, 200);
    assert.equal(Number(third.headers["x-ratelimit-remaining-tokens"]), 400 - used1 - used2 - (estimateSent(primary) + 100));
    const used3 = usageOf(third);
    await statSettles("tpm.in_flight", 0);

    const over = await chat("tpm", tenant, { max_tokens: 400 - used1 - used2 - used3 - 5, stream: true });
    assert.equal(over.status, 429);
    assert.match(over.json.error.message, /^Rate limit reached for tokens per minute \(llm-throttle rule `tpm`\): limit 400, requested \d+\. Please try again in (\d+m)?\d+(\.\d+)?s\.$/);
    const retryAfter = Number(over.headers["retry-after"]);
    assert.ok(retryAfter > 50 && retryAfter <= 65, `retry-after ${retryAfter}`);
    assert.equal(Number(over.headers["x-ratelimit-remaining-tokens"]), 400 - used1 - used2 - used3);

    const huge = await chat("tpm", tenant, { max_tokens: 1000 });
    assert.equal(huge.status, 429);
    assert.equal(huge.json.error.code, "request_too_large_for_limit");
    assert.equal(huge.headers["x-should-retry"], "false");
    assert.equal(huge.headers["retry-after"], undefined);
  });

  test("input and output tokens have budgets of their own", async () => {
    const long = "Tokens are what a model reads, one piece of a word at a time. ".repeat(7);
    const a = await chat("io", "io-a", { messages: [{ role: "user", content: long }], max_tokens: 20 });
    assert.equal(a.status, 200, a.text);
    const b = await chat("io", "io-a", { messages: [{ role: "user", content: long }], max_tokens: 20 });
    assert.equal(b.status, 429);
    assert.match(b.json.error.message, /input tokens per minute .*limit 200/);

    const c = await chat("io", "io-b", { max_tokens: 90 });
    assert.equal(c.status, 200);
    await statSettles("io.in_flight", 0);
    const d = await chat("io", "io-b", { max_tokens: 90 });
    assert.equal(d.status, 429);
    assert.match(d.json.error.message, /output tokens per minute .*limit 100, requested 90/);
    const e = await chat("io", "io-b", { max_tokens: 50, stream: true });
    assert.equal(e.status, 200);
  });

  test("max in flight: holds a slot for the whole stream and refuses a third request meanwhile", async () => {
    // Slow enough for the gauge to show them: its changes reach Envoy up to a second late.
    const slow = [
      chat("inflight", "if-a", { max_tokens: 5 }, { "x-mock-latency-ms": "2500" }),
      chat("inflight", "if-a", { max_tokens: 8, stream: true }, { "x-mock-chunk-delay-ms": "320" }),
    ];
    await statReaches("inflight.in_flight", 2);
    const third = await chat("inflight", "if-a", { max_tokens: 5 });
    assert.equal(third.status, 429);
    assert.match(third.json.error.message, /^Too many requests in flight \(llm-throttle rule `inflight`\): limit 2\./);
    assert.equal(third.headers["retry-after"], "1");
    const done = await Promise.all(slow);
    assert.deepEqual(done.map((r) => r.status), [200, 200]);
    await statSettles("inflight.in_flight", 0);
    assert.equal((await chat("inflight", "if-a", { max_tokens: 5 })).status, 200);
  });

  test("max in flight: a stream that outlasts the slot's lease keeps its slot, renewed by its worker", async () => {
    // Slots are leases of at most 4 s (so that a failed VM's come back), renewed while the request lives.
    const stream = chat("long", "lg-a", { max_tokens: 8, stream: true }, { "x-mock-chunk-delay-ms": "1000", "x-mock-completion-tokens": "6" });
    await statReaches("long.in_flight", 1);
    await sleep(5000);
    // Each on a new connection, so that the worker without the stream is asked too: it knows of the
    // slot only through the lease the stream's worker renews.
    const refused = await Promise.all(Array.from({ length: 8 }, () => chatOnNewConnection("long", "lg-a", { max_tokens: 5 })));
    assert.deepEqual(refused.map((r) => r.status), Array(8).fill(429));
    assert.match(refused[0].text, /"Too many requests in flight \(llm-throttle rule `long`\)/);
    const done = await stream;
    assert.equal(done.status, 200);
    assert.equal(readSse(done.text).at(-1)!.data, "[DONE]");
    await statSettles("long.in_flight", 0);
    assert.equal((await chat("long", "lg-a", { max_tokens: 5 })).status, 200);
  });

  test("queue: waiting requests go first come, first served across workers; a full queue refuses", async () => {
    primary.reset();
    const tenant = "q-a";
    const label = (name: string) => ({ messages: [{ role: "user", content: `request ${name}` }], max_tokens: 4 });
    // A outlasts the five waits for the gauge below, each up to a flush period (tooling/stats.ts).
    const a = chat("queue", tenant, label("A"), { "x-mock-latency-ms": "6000" });
    await statReaches("queue.in_flight", 1);
    const waiting: Promise<HttpResult>[] = [];
    for (const name of ["B", "C", "D", "E", "F"]) {
      waiting.push(chat("queue", tenant, { ...label(name), stream: name === "C" }, { "x-mock-latency-ms": "100" }));
      await statReaches("queue.waiting", waiting.length);
    }
    const full = await chat("queue", tenant, label("G"));
    assert.equal(full.status, 429);
    assert.match(full.json.error.message, /^Too many requests waiting \(llm-throttle rule `queue`\): the queue holds 5\./);

    const results = await Promise.all([a, ...waiting]);
    assert.deepEqual(results.map((r) => r.status), Array(6).fill(200));
    const order = primary.requests.map((r) => (r.json as any).messages[0].content);
    assert.deepEqual(order, ["A", "B", "C", "D", "E", "F"].map((name) => `request ${name}`));
    await statsSettleAt(envoy, { [throttleStat("queue.waiting")]: 0, [throttleStat("queue.in_flight")]: 0 });
  });

  test("queue: a request that waits too long is refused; one whose client leaves frees its place", async () => {
    const slow = chat("queue-short", "qs-a", { max_tokens: 4 }, { "x-mock-latency-ms": "2500" });
    await statReaches("queue-short.in_flight", 1);
    const started = Date.now();
    const late = await chat("queue-short", "qs-a", { max_tokens: 4 });
    assert.equal(late.status, 429);
    assert.ok(Date.now() - started >= 280, "it waited before being refused");
    assert.match(late.json.error.message, /no room under its limits after waiting \d+ms/);
    await statSettles("queue-short.queue_timeouts", 1);

    // The queue holds one: a client that gives up must not keep the place from the next one.
    // Busy while the gauge shows each of the three steps below, each up to a flush period late.
    const busy = chat("queue-one", "qo-a", { max_tokens: 4 }, { "x-mock-latency-ms": "5000" });
    await statReaches("queue-one.in_flight", 1);
    const leaving = new AbortController();
    const gone = fetch(envoy.url("/v1/chat/completions"), {
      method: "POST", signal: leaving.signal,
      headers: { "content-type": "application/json", "x-scenario": "queue-one", "x-tenant": "qo-a" },
      body: JSON.stringify({ model: "gpt-4o", messages: hello, max_tokens: 4 }),
    }).catch(() => "aborted");
    await statReaches("queue-one.waiting", 1);
    leaving.abort();
    assert.equal(await gone, "aborted");
    await statReaches("queue-one.waiting", 0);
    const next = chat("queue-one", "qo-a", { max_tokens: 4 });
    await statReaches("queue-one.waiting", 1);
    assert.deepEqual([(await slow).status, (await busy).status, (await next).status], [200, 200, 200]);
  });

  test("redirect: over the budget, requests go to the fallback, counted; clients cannot forge the header", async () => {
    primary.reset();
    fallback.reset();
    const forged = await chat("redirect", "rd-a", { max_tokens: 200 }, { "x-llm-fallback": "small" });
    assert.equal(forged.status, 200);
    assert.equal(forged.headers["x-mock-served-by"], "primary");
    await statSettles("redirect.in_flight", 0);
    const redirected = await chat("redirect", "rd-a", { max_tokens: 270, stream: true });
    assert.equal(redirected.status, 200);
    assert.equal(redirected.headers["x-mock-served-by"], "fallback");
    assert.equal(fallback.requests.length, 1);
    assert.equal(fallback.requests[0].headers["x-llm-fallback"], "small");
    assert.equal(readSse(redirected.text).at(-1)!.data, "[DONE]");
    await statSettles("redirect.redirected", 1);
    assert.equal(primary.requests.length, 1);
  });

  test("reconciliation: after completed, failed and reset requests nothing stays in flight and the budget holds what was used", async () => {
    const tenant = "rc-a";
    const url = envoy.url("/v1/chat/completions");
    const headers = (extra: Record<string, string> = {}) => ({ "x-scenario": "recon", "x-tenant": tenant, ...extra });
    const body = (extra: object = {}) => ({ model: "gpt-4o", messages: hello, max_tokens: 12, ...extra });
    primary.reset();
    const before = await settledStat(envoy, throttleStat("recon.tokens_used"));

    const completed = await Promise.all([
      chat("recon", tenant, { max_tokens: 12 }),
      chat("recon", tenant, { max_tokens: 40 }),
      chat("recon", tenant, { max_tokens: 12, stream: true, stream_options: { include_usage: true } }),
    ]);
    let expected = completed.reduce((sum, r) => sum + usageOf(r), 0);

    // Streams without a usage chunk: the prompt estimate plus the words that arrived (one token each).
    const counted = await Promise.all([
      postPartial(url, body({ stream: true }), headers()),
      postPartial(url, body({ stream: true }), headers({ "x-mock-reset-after": "4" })),
    ]);
    for (const r of counted) {
      const words = readSse(r.text).filter((e) => e.data !== "[DONE]").map((e) => JSON.parse(e.data).choices[0]?.delta?.content ?? "").join("");
      expected += (words.match(/ \w+/g) ?? []).length;
    }
    expected += primary.requests.filter((r) => (r.json as any).stream && !(r.json as any).stream_options).reduce((sum, r) => sum + Number(r.headers["x-llm-prompt-tokens"]), 0);
    assert.equal(counted[1].complete, false, "the reset stream was cut");

    // An Anthropic stream cut after a few events: its message_start already told the real input.
    const cut = await postPartial(envoy.url("/v1/messages"), { model: "claude-3-5-haiku", max_tokens: 12, stream: true, messages: hello }, headers({ "x-mock-reset-after": "4" }));
    const events = readSse(cut.text).map((e) => JSON.parse(e.data));
    expected += events[0].message.usage.input_tokens + events.filter((e) => e.type === "content_block_delta").length;

    // Failures cost nothing: an error status, and a reset before any answer.
    const failed = await Promise.all([
      chat("recon", tenant, { max_tokens: 12 }, { "x-mock-status": "500" }),
      chat("recon", tenant, { max_tokens: 12, stream: true }, { "x-mock-status": "500" }),
      chat("recon", tenant, { max_tokens: 12 }, { "x-mock-reset-after": "0" }),
    ]);
    assert.deepEqual(failed.map((r) => r.status), [500, 500, 503]);

    await statsSettleAt(envoy, { [throttleStat("recon.in_flight")]: 0, [throttleStat("recon.tokens_reserved")]: 0 });
    const charged = (await stat(envoy, throttleStat("recon.tokens_used"))) - before;
    // Exact but for the estimated text of two streams, which may differ by a token or two from the words.
    assert.ok(Math.abs(charged - expected) <= 4, `charged ${charged}, really used ${expected}`);

    // The shared budget agrees: a probe sees 100000 minus what was used minus its own reservation.
    const probe = await chat("recon", tenant, { max_tokens: 10 });
    const remaining = Number(probe.headers["x-ratelimit-remaining-tokens"]);
    assert.equal(remaining, 100000 - charged - (estimateSent(primary) + 10));
    console.log(`reconciliation: charged ${charged} tokens for ${expected} used`);
  });

  test("accuracy: concurrent clients on two workers stay within 5% of a tokens-per-minute budget", async () => {
    const budget = 3000;
    const deadline = Date.now() + 4000;
    let admittedTokens = 0;
    let admitted = 0;
    let refused = 0;
    const client = async (n: number) => {
      let i = 0;
      while (Date.now() < deadline) {
        i++;
        const stream = (n + i) % 2 === 0;
        const res = await chat("accuracy", `acc-${n}`, {
          messages: [{ role: "user", content: `Client ${n} asks question ${i} about rate limits and tokens.` }],
          max_tokens: 60,
          ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
        }, { "x-mock-completion-tokens": String(10 + ((n * 7 + i * 13) % 50)), "x-mock-latency-ms": "30" });
        if (res.status === 200) {
          admitted++;
          admittedTokens += usageOf(res);
        } else {
          assert.equal(res.status, 429, res.text);
          refused++;
          await sleep(100);
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, n) => client(n)));
    const ratio = admittedTokens / budget;
    console.log(`accuracy: ${admitted} requests admitted with ${admittedTokens} tokens against a budget of ${budget} (${(ratio * 100).toFixed(1)}%, ${((ratio - 1) * 100).toFixed(1)}% over), ${refused} refused`);
    assert.ok(refused > 0, "the budget was reached");
    assert.ok(ratio <= 1.05, `admitted ${admittedTokens} tokens, more than 5% over ${budget}`);
    assert.ok(ratio >= 0.8, `admitted only ${admittedTokens} of ${budget}: the refunds did not come back`);
  });

  test("shadow copies are not counted against the primary budget", async () => {
    const shadows = await Promise.all(Array.from({ length: 8 }, () =>
      postWithHost("llm-shadow", "/v1/chat/completions", { model: "gpt-4o", messages: hello, max_tokens: 3 }, { "x-scenario": "rps", "x-tenant": "sh-a" })));
    assert.deepEqual(shadows, Array(8).fill(200));
    const real = await Promise.all(Array.from({ length: 6 }, () => chat("rps", "sh-a", { max_tokens: 3 })));
    assert.ok(real.filter((r) => r.status === 200).length >= 5, "the shadows left the bucket full");
  });

  test("rules match on API and model; the key can be the model", async () => {
    const send = (model: string, path = "/v1/messages") => postJson(envoy.url(path), { model, max_tokens: 3, messages: hello }, { "x-scenario": "models" });
    assert.equal((await send("claude-3-5-haiku")).status, 200);
    assert.equal((await send("claude-3-5-haiku")).status, 429);
    assert.equal((await send("claude-3-opus")).status, 200, "another model has its own key");
    assert.equal((await send("gpt-4o")).status, 200, "not a claude-* model");
    assert.equal((await send("claude-3-opus", "/v1/chat/completions")).status, 200, "not the Anthropic API");
  });

  test("tenant keys live in a fixed number of slots: with every slot active, a new tenant shares one", async () => {
    assert.equal((await chat("slots", "slot-a", { max_tokens: 3 })).status, 200);
    const newcomer = await chat("slots", "slot-b", { max_tokens: 3 });
    assert.equal(newcomer.status, 429, "slot-b was counted in slot-a's record, not in a new one");
    await statSettles("slots.shared_key_slots", 1);
    await envoy.waitForLog(/rule slots: every key slot this key may use is held by another active key; raise key_slots \(now 1\)/);
  });

  test("the official openai client gets a 429, waits the Retry-After it was given, and succeeds", async () => {
    const calls: { status: number; at: number; retryAfter: string | null }[] = [];
    const recordingFetch = async (input: any, init?: any) => {
      const res = await fetch(input, init);
      calls.push({ status: res.status, at: Date.now(), retryAfter: res.headers.get("retry-after") });
      return res;
    };
    const client = new OpenAI({
      apiKey: "sk-test", baseURL: envoy.url("/v1"), maxRetries: 2, fetch: recordingFetch,
      defaultHeaders: { "x-scenario": "openai", "x-tenant": "oa-a" },
    });
    const first = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "first" }], max_tokens: 4 });
    assert.equal(first.choices[0].finish_reason, "length");
    const second = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "second" }], max_tokens: 4 });
    assert.equal(second.object, "chat.completion");
    assert.deepEqual(calls.map((c) => c.status), [200, 429, 200]);
    assert.equal(calls[1].retryAfter, "1");
    assert.ok(calls[2].at - calls[1].at >= 950, `retried after ${calls[2].at - calls[1].at} ms`);
  });

  test("the official openai client's request waits in a queue and completes instead of failing", async () => {
    const calls: number[] = [];
    const client = new OpenAI({
      apiKey: "sk-test", baseURL: envoy.url("/v1"), maxRetries: 0,
      fetch: async (input: any, init?: any) => {
        const res = await fetch(input, init);
        calls.push(res.status);
        return res;
      },
      defaultHeaders: { "x-scenario": "queue", "x-tenant": "oa-q" },
    });
    const slow = chat("queue", "oa-q", { max_tokens: 4 }, { "x-mock-latency-ms": "2500" });
    await statReaches("queue.in_flight", 1);
    const stream = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "queued" }], max_tokens: 6, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(text.trim().split(/\s+/).length, 6);
    assert.deepEqual(calls, [200]);
    assert.equal((await slow).status, 200);
  });
});

describe("throttle filter without the admission filter", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());
  const config = {
    rules: [{ name: "gpt", match: { models: ["gpt-4o"] }, key: ["model"], limits: { tokens_per_minute: 500 } }],
  };

  envoyTest("reads the body itself for the model, the prompt and max_tokens", () => ({ scenario: "throttle-alone", vars: { UPSTREAM_PORT: mock.port, THROTTLE_CONFIG: config } }), async (proxy) => {
    const url = proxy.url("/v1/chat/completions");
    const first = await postJson(url, { model: "gpt-4o", messages: hello, max_tokens: 300 });
    assert.equal(first.status, 200, first.text);
    const remaining = Number(first.headers["x-ratelimit-remaining-tokens"]);
    // 500 minus 300 and a prompt estimate near the real prompt (6 tokens of text, plus message framing).
    assert.ok(remaining >= 180 && remaining <= 195, `remaining ${remaining}`);
    const other = await postJson(url, { model: "gpt-4o-mini", messages: hello, max_tokens: 450 });
    assert.equal(other.status, 200);
    assert.equal(other.headers["x-ratelimit-remaining-tokens"], undefined, "no rule matches another model");
    const over = await postJson(url, { model: "gpt-4o", messages: hello, max_tokens: 480, stream: true });
    assert.equal(over.status, 429);
    assert.match(over.json.error.message, /limit 500, requested \d+/);
  });
});

/** Client certificates with SPIFFE URI SANs, as Istio workloads present them (see the README there). */
const certs = join(repoDir, "envoy", "throttle-mtls-certs");

describe("throttle filter keyed by the mTLS peer", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());
  const config = { rules: [{ name: "per-peer", key: ["peer"], limits: { requests_per_second: 1 } }] };

  const post = (proxy: EnvoyHandle, client: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const data = JSON.stringify({ model: "gpt-4o", messages: hello, max_tokens: 3 });
      const req = httpsRequest({
        host: "127.0.0.1", port: proxy.ports.LISTEN_PORT, path: "/v1/chat/completions", method: "POST",
        ca: readFileSync(join(certs, "ca.crt")), cert: readFileSync(join(certs, `${client}.crt`)), key: readFileSync(join(certs, `${client}.key`)),
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data) },
      }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      req.on("error", reject);
      req.end(data);
    });

  envoyTest("each workload identity has its own budget", () => ({ scenario: "throttle-mtls", vars: { UPSTREAM_PORT: mock.port, THROTTLE_CONFIG: config } }), async (proxy) => {
    assert.equal(await post(proxy, "alice"), 200);
    assert.equal(await post(proxy, "alice"), 429);
    assert.equal(await post(proxy, "bob"), 200, "another peer is not held back by alice's budget");
    assert.equal(await post(proxy, "bob"), 429);
  });
});

describe("throttle config validation in Envoy", () => {
  const refused = async (config: object, message: RegExp) => {
    await assert.rejects(
      startEnvoy({ scenario: "throttle-alone", vars: { UPSTREAM_PORT: 9, THROTTLE_CONFIG: config }, readyTimeoutMs: 15000 }),
      (error: Error) => {
        assert.match(error.message, message);
        const dir = /log (\S+)\/envoy\.log/.exec(error.message)?.[1];
        if (dir) rmSync(dir, { recursive: true, force: true });
        return true;
      },
    );
  };

  test("Envoy refuses to start on an unknown action, a negative limit or a missing key, naming the field", async () => {
    await refused({ rules: [{ key: ["global"], limits: { max_in_flight: 1 }, action: "drop" }] },
      /llm-throttle\[\d+\]: invalid configuration, refusing to start: rules\[0\]\.action: must be one of reject, queue, redirect, got "drop"/);
    await refused({ rules: [{ key: ["global"], limits: { tokens_per_minute: -100 } }] },
      /refusing to start: rules\[0\]\.limits\.tokens_per_minute: must be an integer from 1 to \d+, got -100/);
    await refused({ rules: [{ limits: { requests_per_second: 20 } }] },
      /refusing to start: rules\[0\]\.key: required: whom the limits are per/);
  });
});
