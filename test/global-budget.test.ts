// Cluster-wide budgets with the real parts: Redis and Envoy's reference rate limit service
// (envoyproxy/ratelimit, built by `npm run setup:ratelimit`; a missing one fails these tests), and
// two Envoys with two workers each, both running llm-throttle with one global token budget
// (envoy/global-budget.yaml), as separate filters and as the one module.
//
// The accounting these tests hold (docs: "what the service's counter holds"): for a key and a
// window, the service's counter is what requests used (llm_throttle.<rule>.tokens_used) plus what
// they reserved and did not use that is still held as credit on each Envoy (credited minus spent)
// plus what reservations the service refused added anyway (refused_tokens), less over-use that
// never reached the service (settle_dropped, 0 here).
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, startEnvoy, tail } from "../tooling/envoy.ts";
import { postJson, readSse } from "../tooling/http.ts";
import { countPromptTokens, type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { asOneModule } from "../tooling/one-module.ts";
import { type RateLimitService, type Redis, startRateLimitService, startRedis } from "../tooling/ratelimit.ts";
import { METRIC_FLUSH_MS, settlesAt } from "../tooling/stats.ts";

const DOMAIN = "llm-mesh-global";
/** Tokens per minute for the whole cluster: a few hundred requests' worth, spent in the first seconds of a run. */
const BUDGET = 12_000;
const RUN_MS = 5000;
const CLIENTS = 64;
const TIMEOUT_MS = 500;
const RPS = 10;

const only = (scenario: string) => ({ headers: [{ name: "x-scenario", exact: scenario }] });
const service = (extra: object = {}) => ({ cluster: "ratelimit", domain: DOMAIN, timeout_ms: TIMEOUT_MS, failure_threshold: 3, failure_backoff_ms: 1000, ...extra });
const throttle = {
  tick_ms: 20,
  rate_limit_service: service(),
  rules: [
    { name: "budget", match: only("budget"), key: ["header:x-tenant"], backend: "global", limits: { tokens_per_minute: BUDGET }, default_output_tokens: 60 },
    { name: "rps", match: only("rps"), key: ["header:x-tenant"], backend: "global", limits: { requests_per_second: RPS }, on_service_failure: "local", local_share: 0.5 },
  ],
};
const admission = { hold_headers: true, unknown_model: "allow" };
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

describe("one token budget across two Envoys, counted by the rate limit service", () => {
  const scratch = join(repoDir, ".tmp", `global-budget-${process.pid}`);
  let redis: Redis;
  let rls: RateLimitService;
  let mock: MockLlm;
  let envoys: EnvoyHandle[] = [];

  const startPair = (oneModule: boolean, config: object = throttle) =>
    Promise.all([0, 1].map(() => startEnvoy({
      scenario: "global-budget",
      concurrency: 2,
      componentLogLevel: "wasm:info",
      vars: { UPSTREAM_PORT: mock.port, RLS_PORT: rls.grpcPort, ADMISSION_CONFIG: admission, THROTTLE_CONFIG: config },
      edit: oneModule ? asOneModule : undefined,
    })));
  const stopEnvoys = async () => {
    await Promise.all(envoys.map((e) => e.stop()));
    if (!process.env.KEEP_TMP) for (const e of envoys) rmSync(e.tmpDir, { recursive: true, force: true });
    envoys = [];
  };
  /** A stat summed over both Envoys (Wasm stats are wasmcustom.<name>). */
  const stat = async (name: string) => (await Promise.all(envoys.map(async (e) => (await e.stats()).get(`wasmcustom.${name}`) ?? 0))).reduce((a, b) => a + b, 0);
  const globalStat = (name: string, rule: string, labels = "") => stat(`llm_throttle_global_${name}llm_rule=.=${rule};.;${labels}`);

  before(async () => {
    mkdirSync(scratch, { recursive: true });
    redis = await startRedis({ workDir: join(scratch, "redis") });
    rls = await startRateLimitService({ redis, domain: DOMAIN, workDir: join(scratch, "ratelimit") });
    mock = await startMockLlm({ name: "primary" });
    envoys = await startPair(false);
  });

  after(async () => {
    await stopEnvoys();
    await rls?.stop();
    await redis?.stop();
    await mock?.close();
    if (!process.env.KEEP_TMP) rmSync(scratch, { recursive: true, force: true });
  });

  /** Waits, if need be, for a minute window with at least `ms` left: a run must reserve and settle in one window. */
  async function windowWithRoom(ms: number): Promise<number> {
    const left = 60_000 - (Date.now() % 60_000);
    if (left < ms) await sleep(left + 200);
    return Math.floor(Date.now() / 60_000) * 60;
  }

  /**
   * 64 clients, 32 on each Envoy, for RUN_MS against one tenant's budget: half stream (half of those
   * without include_usage, so that the throttle counts the streamed text), half take JSON. Each
   * asks for 10 to 59 completion tokens of the mock with max_tokens 60.
   */
  async function budgetRun(tenant: string, label: string): Promise<void> {
    const windowStart = await windowWithRoom(RUN_MS + 8000);
    const deadline = Date.now() + RUN_MS;
    let used = 0;
    let throttleView = 0;
    const admitted = [0, 0];
    let refused = 0;
    const unreported: string[] = [];
    const client = async (n: number) => {
      const envoy = envoys[n % 2];
      const stream = Math.floor(n / 2) % 2 === 0;
      const includeUsage = stream && Math.floor(n / 4) % 2 === 0;
      for (let i = 1; Date.now() < deadline; i++) {
        const id = `${tenant}-${n}-${i}`;
        const completion = 10 + ((n * 7 + i * 13) % 50);
        const body = {
          model: "gpt-4o", max_tokens: 60,
          messages: [{ role: "user", content: `Client ${n} asks question ${i} about rate limits and tokens.` }],
          ...(stream ? { stream: true, ...(includeUsage ? { stream_options: { include_usage: true } } : {}) } : {}),
        };
        const res = await postJson(envoy.url("/v1/chat/completions"), body, {
          "x-scenario": "budget", "x-tenant": tenant, "x-test-id": id, "x-mock-completion-tokens": String(completion), "x-mock-latency-ms": "20",
        });
        if (res.status !== 200) {
          assert.equal(res.status, 429, res.text);
          refused++;
          await sleep(200);
          continue;
        }
        admitted[n % 2]++;
        const real = countPromptTokens("/v1/chat/completions", body) + completion;
        used += real;
        if (stream && !includeUsage) {
          unreported.push(id);
          continue;
        }
        const reported = stream ? readSse(res.text).map((e) => (e.data === "[DONE]" ? {} : JSON.parse(e.data))).findLast((c) => c.usage)?.usage : res.json.usage;
        assert.equal(reported.prompt_tokens + reported.completion_tokens, real, "the mock reports what it served");
        throttleView += real;
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, n) => client(n)));
    // A stream without usage is charged the prompt estimate admission forwarded, plus its text.
    for (const id of unreported) {
      const upstream = mock.requests.find((r) => r.headers["x-test-id"] === id)!;
      throttleView += Number(upstream.headers["x-llm-prompt-tokens"]) + Number(upstream.headers["x-mock-completion-tokens"]);
    }
    // Settled, and still a flush period later (tooling/stats.ts), which also gives the settlement
    // calls of over-use, sent as requests end, a moment to land.
    await settlesAt(() => stat("llm_throttle.budget.in_flight"), 0, "requests settled", 5000);
    const keys = await redis.keys(`${DOMAIN}_rule_budget_key_*_limit_tokens_${windowStart}`);
    assert.equal(Math.floor(Date.now() / 60_000) * 60, windowStart, "the run stayed in one window");
    const [tokensUsed, credited, spent, refusedTokens, dropped, fallbacks, failures] = await Promise.all([
      stat("llm_throttle.budget.tokens_used"),
      globalStat("credited_tokens_total", "budget"),
      globalStat("credit_spent_tokens_total", "budget"),
      globalStat("refused_tokens_total", "budget"),
      globalStat("settle_dropped_total", "budget"),
      globalStat("fallbacks_total", "budget", "llm_failure_mode=.=local;.;"),
      globalStat("calls_total", "budget", "llm_outcome=.=failure;.;"),
    ]);
    const counters = await Promise.all(keys.map((k) => redis.counter(k)));
    const counter = counters.reduce<number>((a, b) => a + (b ?? 0), 0);
    const held = credited - spent;
    const percent = (tokens: number) => `${((tokens / BUDGET) * 100).toFixed(1)}%`;
    console.log(`${label}: ${admitted[0]} + ${admitted[1]} requests admitted by the two Envoys, ${refused} refused; against one budget of ${BUDGET} tokens/minute, ` +
      `${used} tokens used as the model counts them (${percent(used)}), ${tokensUsed} as llm-throttle settled them (${percent(tokensUsed)}; ` +
      `it counts the chat framing in prompts too, and the text of streams without usage itself); ` +
      `Redis counter ${counter} = ${tokensUsed} settled + ${held} credit left unspent (${credited} credited - ${spent} spent) + ${refusedTokens} of refused reservations`);
    assert.equal(keys.length, 1, `one counter for the tenant: ${keys.join(", ")}`);
    assert.ok(admitted[0] > 0 && admitted[1] > 0, "both Envoys spent the budget");
    assert.ok(refused > 0, "the budget was reached");
    assert.equal(failures, 0);
    assert.equal(fallbacks, 0);
    assert.equal(dropped, 0);
    assert.ok(used <= BUDGET * 1.05 && tokensUsed <= BUDGET * 1.05, `${used} (${tokensUsed} settled) tokens admitted, more than 105% of one budget of ${BUDGET}`);
    assert.ok(used >= BUDGET * 0.85, `only ${used} of ${BUDGET} tokens used`);
    assert.equal(counter, tokensUsed + held + refusedTokens, "the service's counter is what was used plus the over-reservation");
    // What the throttle settled is what was used, but for the text of streams without usage it counts itself.
    assert.ok(Math.abs(tokensUsed - throttleView) <= unreported.length, `settled ${tokensUsed}, used as the throttle sees it ${throttleView}`);
  }

  test("64 clients on two Envoys (separate filters) spend one budget, and the service's counter adds up", { timeout: 90_000 }, async (t) => {
    try {
      await budgetRun("acme", "two Envoys, separate filters");
    } catch (err) {
      for (const e of envoys) t.diagnostic(tail(e.log(), 30));
      throw err;
    }
  });

  test("the service, then Redis, stop mid-run: requests go on under on_service_failure within the timeout; back, the budget is global again", { timeout: 90_000 }, async (t) => {
    const latencies: number[] = [];
    const statuses = new Map<number, number>();
    let stop = false;
    const client = async (n: number) => {
      while (!stop) {
        const started = Date.now();
        const res = await postJson(envoys[n % 2].url("/v1/chat/completions"), { model: "gpt-4o", max_tokens: 5, messages: [{ role: "user", content: "hi" }] },
          { "x-scenario": "rps", "x-tenant": "outage", "x-mock-latency-ms": "5" });
        latencies.push(Date.now() - started);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        await sleep(40);
      }
    };
    const load = Array.from({ length: 8 }, (_, n) => client(n));
    const counts = async () => ({
      ok: await globalStat("calls_total", "rps", "llm_outcome=.=ok;.;"),
      over: await globalStat("calls_total", "rps", "llm_outcome=.=over_limit;.;"),
      fallbacks: await globalStat("fallbacks_total", "rps", "llm_failure_mode=.=local;.;"),
    });
    const logFrom = envoys.map((e) => e.log().length);
    /** Until every Envoy said `line` (once each); the load goes on meanwhile. */
    const everyEnvoySays = (line: RegExp) => Promise.all(envoys.map((e, i) => e.waitForLog(line, 20_000, logFrom[i])));
    try {
      await sleep(500 + METRIC_FLUSH_MS);
      const served = await counts();
      assert.ok(served.ok > 0 && served.over > 0, `the service counted and refused: ${JSON.stringify(served)}`);
      assert.equal(served.fallbacks, 0);

      await rls.stop();
      await everyEnvoySays(/rate limit service ratelimit unavailable after 3 failed calls/);
      // Counts reach Envoy up to a flush period after the requests.
      await sleep(1000 + METRIC_FLUSH_MS);
      const down = await counts();
      assert.ok(down.fallbacks > 0, "requests went on under the local share");

      rls = await startRateLimitService({ redis, domain: DOMAIN, workDir: join(scratch, "ratelimit"), grpcPort: rls.grpcPort });
      await everyEnvoySays(/rate limit service ratelimit answers again/);

      await redis.stop();
      const beforeRedis = envoys.map((e) => e.log().length);
      await Promise.all(envoys.map((e, i) => e.waitForLog(/rate limit service ratelimit unavailable after 3 failed calls \(last: gRPC status 2/, 20_000, beforeRedis[i])));
      const withoutRedis = await counts();
      await sleep(1000 + METRIC_FLUSH_MS);
      assert.ok((await counts()).fallbacks > withoutRedis.fallbacks, "requests went on under the local share without Redis too");

      redis = await startRedis({ workDir: join(scratch, "redis"), port: redis.port });
      await Promise.all(envoys.map((e, i) => e.waitForLog(/rate limit service ratelimit answers again/, 20_000, beforeRedis[i])));
      // Fallbacks from before the service came back reach Envoy within a flush period.
      await sleep(300 + METRIC_FLUSH_MS);
      const back = await counts();
      await sleep(1500);
      const after = await counts();
      console.log(`outage: ${latencies.length} requests, slowest ${Math.max(...latencies)} ms (timeout_ms ${TIMEOUT_MS}), statuses ${JSON.stringify(Object.fromEntries(statuses))}; ` +
        `calls ok ${after.ok}, over_limit ${after.over}, fallbacks ${after.fallbacks}`);
      assert.ok(after.ok > back.ok && after.over > back.over, "the service counts and refuses again");
      assert.equal(after.fallbacks, back.fallbacks, "no request falls back once the service answers");
      assert.ok((await redis.keys(`${DOMAIN}_rule_rps_*`)).length > 0, "counted in the new Redis");
    } catch (err) {
      for (const e of envoys) t.diagnostic(tail(e.log(), 30));
      throw err;
    } finally {
      stop = true;
      await Promise.all(load);
    }
    assert.deepEqual([...statuses.keys()].sort(), [200, 429], "every request was answered, admitted or refused");
    assert.ok(Math.max(...latencies) < TIMEOUT_MS + 400, `a request took ${Math.max(...latencies)} ms`);
    for (const e of envoys) {
      // Once per outage and Envoy; the service may fail a few calls more while it reconnects to Redis, each such flap said once too.
      const down = e.log().match(/rate limit service ratelimit unavailable after/g)?.length ?? 0;
      const up = e.log().match(/rate limit service ratelimit answers again/g)?.length ?? 0;
      assert.ok(down >= 2 && down === up && down <= 4, `said unavailable ${down} times and available ${up} times`);
    }
  });

  test("the one module on two Envoys spends one budget too", { timeout: 90_000 }, async (t) => {
    await stopEnvoys();
    envoys = await startPair(true);
    try {
      await budgetRun("globex", "two Envoys, one module");
    } catch (err) {
      for (const e of envoys) t.diagnostic(tail(e.log(), 30));
      throw err;
    }
  });

  test("a global configuration without a cluster, or with a bad domain, is refused at start", async () => {
    const refused = async (config: object, message: RegExp, oneModule: boolean) => {
      await assert.rejects(
        startEnvoy({
          scenario: "global-budget", concurrency: 1, readyTimeoutMs: 15_000, edit: oneModule ? asOneModule : undefined,
          vars: { UPSTREAM_PORT: mock.port, RLS_PORT: rls.grpcPort, ADMISSION_CONFIG: admission, THROTTLE_CONFIG: config },
        }),
        (error: Error) => {
          assert.match(error.message, message);
          const dir = /log (\S+)\/envoy\.log/.exec(error.message)?.[1];
          if (dir && !process.env.KEEP_TMP) rmSync(dir, { recursive: true, force: true });
          return true;
        },
      );
    };
    const { cluster: _, ...withoutCluster } = service();
    await refused({ ...throttle, rate_limit_service: withoutCluster }, /llm-throttle\[\d+\]: invalid configuration, refusing to start: rate_limit_service\.cluster: required/, false);
    await refused({ ...throttle, rate_limit_service: service({ domain: "llm mesh" }) },
      /llm-mesh\[\d+\]: invalid configuration, refusing to start: throttle\.rate_limit_service\.domain: must be 1 to 64 letters, digits, _, - or \./, true);
  });
});
