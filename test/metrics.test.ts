// The metrics filter in the real Envoy, behind the admission filter, scraped by the real Prometheus:
// what PromQL answers per model, what the access log records per request, and that label values
// taken from requests cannot grow the number of series.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, envoyTest, startEnvoy } from "../tooling/envoy.ts";
import { postJson, rawHttp, readSse, type HttpResult } from "../tooling/http.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { checkMetrics, type PrometheusHandle, promtool, startPrometheus } from "../tooling/prometheus.ts";

const admission = {
  hold_headers: true,
  unknown_model: "allow",
  models: { default: { max_prompt_tokens: 200, max_output_tokens: 512, output_limit_action: "clamp" } },
};
const metricsConfig = { models: ["gpt-4o", "claude-3-5-sonnet-latest"], tenant_header: "x-tenant" };

const hello = [{ role: "user", content: "Say hello to the mesh." }];
const longPrompt = [{ role: "user", content: "The quick brown fox jumps over the lazy dog. ".repeat(40) }];
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

// ---------------------------------------------------------------- helpers

interface Usage {
  input: number;
  output: number;
}

/** The usage the mock upstream reported in a response, JSON or SSE, OpenAI or Anthropic. */
function usageOf(res: HttpResult): Usage {
  if (res.json?.usage) {
    const u = res.json.usage;
    return { input: u.prompt_tokens ?? u.input_tokens, output: u.completion_tokens ?? u.output_tokens };
  }
  const usage: Usage = { input: -1, output: -1 };
  for (const event of readSse(res.text)) {
    if (event.data === "[DONE]") continue;
    const data = JSON.parse(event.data);
    if (data.type === "message_start") usage.input = data.message.usage.input_tokens;
    else if (data.type === "message_delta") usage.output = data.usage.output_tokens;
    else if (data.usage) {
      usage.input = data.usage.prompt_tokens;
      usage.output = data.usage.completion_tokens;
    }
  }
  assert.ok(usage.input >= 0 && usage.output >= 0, `no usage in ${res.text.slice(0, 300)}`);
  return usage;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

async function scrape(envoy: EnvoyHandle): Promise<string> {
  return (await fetch(envoy.adminUrl("/stats/prometheus"))).text();
}

const ours = (name: string) => name.startsWith("gen_ai_") || name.startsWith("llm_mesh_");

/** Polls the admin scrape until `accept` holds for our samples (histograms appear at the next stats flush). */
async function scrapeUntil(envoy: EnvoyHandle, accept: (samples: Sample[]) => boolean, timeoutMs = 10_000): Promise<Sample[]> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const samples = parseExposition(await scrape(envoy)).filter((s) => ours(s.name));
    if (accept(samples)) return samples;
    if (Date.now() > deadline) throw new Error(`scrape never matched; ours:\n${samples.map((s) => `${s.name}${JSON.stringify(s.labels)} ${s.value}`).join("\n")}`);
    await sleep(200);
  }
}

const sumOf = (samples: Sample[], name: string, match: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);

/**
 * The access log's JSON records. Envoy writes the file at a flush (every 10 s unless started with
 * --file-flush-interval-msec) and at exit, so this stops Envoy first: call it last.
 */
async function accessLog(envoy: EnvoyHandle): Promise<any[]> {
  await envoy.stop();
  const path = join(envoy.tmpDir, "access.log");
  const text = existsSync(path) ? readFileSync(path, "utf8") : "";
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** Runs `tasks` with at most `width` in flight. */
async function pool<T>(width: number, count: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  }));
  return results;
}

// ---------------------------------------------------------------- dashboard queries

interface DashboardQuery {
  panel: string;
  expr: string;
}

const dashboardPath = join(repoDir, "k8s", "dashboards", "llm-mesh.json");

function dashboardQueries(): { queries: DashboardQuery[]; variables: string[] } {
  const dashboard = JSON.parse(readFileSync(dashboardPath, "utf8"));
  const queries: DashboardQuery[] = [];
  const walk = (panels: any[]) => {
    for (const panel of panels ?? []) {
      for (const target of panel.targets ?? []) if (target.expr) queries.push({ panel: panel.title, expr: target.expr });
      walk(panel.panels);
    }
  };
  walk(dashboard.panels);
  const variables = (dashboard.templating?.list ?? []).filter((v: any) => v.type === "query").map((v: any) => v.query?.query ?? v.query);
  return { queries, variables };
}

/** Grafana's variables replaced by what they expand to with "All" selected. */
const concrete = (expr: string) => expr.replaceAll("$__rate_interval", "1m").replace(/\$(model|route)\b/g, ".*");

/** Metric names a PromQL expression selects: identifiers that open a selector or a range. */
const selectedMetrics = (expr: string) => [...expr.matchAll(/([a-zA-Z_:][\w:]*)\s*[{[]/g)].map((m) => m[1]);

/** Family names in a scrape, with a histogram's series suffixes, as PromQL sees them. */
function exposedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
    names.add(m[1]);
    if (m[2] === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(m[1] + suffix);
  }
  return names;
}

// ---------------------------------------------------------------- tests

describe("metrics filter", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());
  // vars is read when the test starts, after before() has started the mock.
  const scenario = (metrics: object = metricsConfig, timeout = 60_000) => ({
    scenario: "metrics",
    get vars() {
      return { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: admission, METRICS_CONFIG: metrics };
    },
    concurrency: 2,
    timeout,
  });

  envoyTest("Prometheus answers per model: request rate, exact token sums, one TTFT per streamed answer", scenario(metricsConfig, 120_000), async (envoy, t) => {
    const prometheus: PrometheusHandle = await startPrometheus({ targets: [`127.0.0.1:${envoy.ports.ADMIN_PORT}`] });
    try {
      const tokens: Record<string, Usage> = { "gpt-4o": { input: 0, output: 0 }, "claude-3-5-sonnet-latest": { input: 0, output: 0 } };
      const answered: Record<string, number> = { "gpt-4o": 0, "claude-3-5-sonnet-latest": 0 };
      const streamed: Record<string, number> = { "gpt-4o": 0, "claude-3-5-sonnet-latest": 0 };
      const send = async (model: string, stream: boolean, n: number) => {
        const anthropic = model.startsWith("claude");
        const body = anthropic
          ? { model, messages: hello, max_tokens: 6 + n, stream }
          : { model, messages: hello, max_tokens: 4 + n, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) };
        const res = await postJson(envoy.url(anthropic ? "/v1/messages" : "/v1/chat/completions"), body);
        assert.equal(res.status, 200, res.text);
        const usage = usageOf(res);
        tokens[model].input += usage.input;
        tokens[model].output += usage.output;
        answered[model]++;
        if (stream) streamed[model]++;
      };
      // Two waves with a scrape between: rate() needs an increase between two samples.
      const wave = async () => {
        for (let i = 0; i < 3; i++) await send("gpt-4o", false, i);
        for (let i = 0; i < 2; i++) await send("gpt-4o", true, i);
        for (let i = 0; i < 2; i++) await send("claude-3-5-sonnet-latest", false, i);
        await send("claude-3-5-sonnet-latest", true, 3);
      };
      await prometheus.nextScrape();
      await wave();
      await prometheus.nextScrape();
      await wave();
      const rejected = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: longPrompt });
      assert.equal(rejected.status, 413);
      const total = answered["gpt-4o"] + answered["claude-3-5-sonnet-latest"] + 1;

      // Histograms reach the scrape at Envoy's next stats flush; wait for the last streamed answer in them.
      const streamedTotal = streamed["gpt-4o"] + streamed["claude-3-5-sonnet-latest"];
      await prometheus.waitFor("sum(gen_ai_server_time_to_first_token_count)", (s) => s[0]?.value === streamedTotal);
      await prometheus.waitFor("sum(gen_ai_server_requests_total)", (s) => s[0]?.value === total);

      await t.test("requests per model, and a rate for each", async () => {
        const byModel = await prometheus.query('sum by (gen_ai_request_model) (gen_ai_server_requests_total{llm_outcome="admitted",llm_status_class="2xx"})');
        assert.deepEqual(Object.fromEntries(byModel.map((s) => [s.metric.gen_ai_request_model, s.value])), answered);
        const rates = await prometheus.query("sum by (gen_ai_request_model) (rate(gen_ai_server_requests_total[1m]))");
        for (const model of Object.keys(answered)) {
          const rate = rates.find((s) => s.metric.gen_ai_request_model === model)?.value ?? 0;
          assert.ok(rate > 0, `rate for ${model}: ${JSON.stringify(rates)}`);
        }
        const refused = await prometheus.query('sum by (llm_status_class, llm_api) (gen_ai_server_requests_total{llm_outcome="rejected"})');
        assert.deepEqual(refused.map((s) => [s.metric.llm_status_class, s.metric.llm_api, s.value]), [["4xx", "openai.chat", 1]]);
      });

      await t.test("token sums equal the usage the upstream reported", async () => {
        const sums = await prometheus.query("sum by (gen_ai_request_model, gen_ai_token_type) (gen_ai_usage_tokens_total)");
        const got: Record<string, Usage> = {};
        for (const s of sums) {
          got[s.metric.gen_ai_request_model] ??= { input: 0, output: 0 };
          got[s.metric.gen_ai_request_model][s.metric.gen_ai_token_type as keyof Usage] = s.value;
        }
        assert.deepEqual(got, tokens);
        const perRequest = await prometheus.value('sum(gen_ai_client_token_usage_count{gen_ai_token_type="output"})');
        assert.equal(perRequest, total - 1);
      });

      await t.test("TTFT histogram counts exactly the streamed answers; duration counts every answer", async () => {
        const ttft = await prometheus.query("sum by (gen_ai_request_model) (gen_ai_server_time_to_first_token_count)");
        assert.deepEqual(Object.fromEntries(ttft.map((s) => [s.metric.gen_ai_request_model, s.value])), streamed);
        const durations = await prometheus.query('sum by (gen_ai_request_model) (gen_ai_server_request_duration_count{llm_status_class="2xx"})');
        assert.deepEqual(Object.fromEntries(durations.map((s) => [s.metric.gen_ai_request_model, s.value])), answered);
        const p95 = await prometheus.value('histogram_quantile(0.95, sum by (le) (rate(gen_ai_server_request_duration_bucket[1m])))');
        assert.ok(Number.isFinite(p95), `p95 ${p95}`);
        assert.equal(await prometheus.value("sum(gen_ai_server_active_requests)"), 0);
      });

      const exposition = await scrape(envoy);

      await t.test("promtool check metrics accepts the scrape; our families lack only the help text Envoy never writes", () => {
        const check = checkMetrics(exposition);
        assert.ok(check.parsed, check.output);
        const ourProblems = check.problems.filter((p) => ours(p.split(" ")[0]));
        const beyondHelp = ourProblems.filter((p) => !p.endsWith(" no help text"));
        assert.deepEqual(beyondHelp, []);
        const families = new Set(ourProblems.map((p) => p.split(" ")[0]));
        assert.ok(families.has("gen_ai_server_requests_total") && families.has("gen_ai_server_time_to_first_token"), [...families].join(", "));
      });

      await t.test("every dashboard query parses (promtool and Prometheus) and names metrics of this scrape", async () => {
        const { queries, variables } = dashboardQueries();
        assert.ok(queries.length >= 12, `${queries.length} queries`);
        const rules = ["groups:", "  - name: dashboard", "    rules:"];
        queries.forEach((q, i) => rules.push(`      - record: dashboard:query_${i}`, `        expr: ${JSON.stringify(concrete(q.expr))}`));
        const rulesPath = join(prometheus.dir, "dashboard-rules.yml");
        writeFileSync(rulesPath, rules.join("\n") + "\n");
        const checked = promtool(["check", "rules", rulesPath]);
        assert.equal(checked.code, 0, checked.stdout + checked.stderr);
        const names = exposedNames(exposition);
        for (const q of queries) {
          await prometheus.query(concrete(q.expr));
          const selected = selectedMetrics(q.expr);
          assert.ok(selected.length > 0, `${q.panel}: no metric in ${q.expr}`);
          for (const name of selected) assert.ok(names.has(name), `${q.panel}: ${name} is not in the scrape`);
        }
        for (const v of variables) {
          const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(v);
          assert.ok(m && names.has(m[1]), `variable query ${v}`);
        }
        const byModel = await prometheus.query(concrete(queries.find((q) => q.panel === "Tokens per second by model")!.expr));
        assert.ok(byModel.length >= 4, JSON.stringify(byModel));
      });
    } finally {
      await prometheus.stop();
    }
  });

  envoyTest("the access log prints each request's record", scenario(), async (envoy) => {
    const tenant = "sk-team-a-secret-key";
    const json = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, max_tokens: 5000 }, { "x-tenant": tenant, "x-mock-model": "gpt-4o-2024-08-06" });
    assert.equal(json.status, 200);
    const streamed = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, max_tokens: 5, stream: true, stream_options: { include_usage: true } });
    const anthropic = await postJson(envoy.url("/v1/messages"), { model: "claude-3-5-sonnet-latest", messages: hello, max_tokens: 4, stream: true });
    const noUsage = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, max_tokens: 6, stream: true });
    const refused = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: longPrompt });
    const failed = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello }, { "x-mock-status": "500" });
    assert.deepEqual([streamed.status, anthropic.status, noUsage.status, refused.status, failed.status], [200, 200, 200, 413, 500]);
    // The upstream dies after the role chunk and two words; Envoy's mirror marks shadow copies "-shadow".
    const raw = (body: object, headers: string) => {
      const text = JSON.stringify(body);
      return rawHttp(envoy.ports.LISTEN_PORT, `POST /v1/chat/completions HTTP/1.1\r\n${headers}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`, { timeoutMs: 5000 });
    };
    const cut = await raw({ model: "gpt-4o", messages: hello, max_tokens: 8, stream: true }, "host: llm\r\nx-mock-reset-after: 3\r\nx-mock-chunk-delay-ms: 20\r\n");
    assert.match(cut, /^HTTP\/1\.1 200/);
    const shadow = await raw({ model: "gpt-4o", messages: hello, max_tokens: 3 }, "host: llm-shadow:8080\r\n");
    assert.match(shadow, /^HTTP\/1\.1 200/);
    const samples = await scrapeUntil(envoy, (s) => sumOf(s, "gen_ai_server_requests_total") === 8);
    assert.equal(sumOf(samples, "gen_ai_server_requests_total", { llm_route: "shadow" }), 1);
    assert.equal(sumOf(samples, "gen_ai_server_requests_total", { llm_outcome: "upstream_error" }), 2);

    const records = await accessLog(envoy);
    assert.equal(records.length, 8);
    const [a, b, c, d, e, f, g] = records.map((r) => r.llm);
    assert.deepEqual(
      { ...a, prompt_tokens_estimated: typeof a.prompt_tokens_estimated },
      {
        api: "openai.chat", model_requested: "gpt-4o", model_answered: "gpt-4o-2024-08-06", route: null,
        tenant: a.tenant, stream: "false", max_tokens: "512", prompt_tokens_estimated: "string",
        prompt_tokens: String(usageOf(json).input), completion_tokens: String(usageOf(json).output), usage_source: "upstream",
        ttft_ms: null, outcome: "admitted", admission: "clamped", throttle: null, router: null,
      },
    );
    assert.match(a.tenant, /^[0-9a-f]{16}$/);
    assert.ok(!JSON.stringify(records).includes(tenant), "the tenant key must only appear hashed");
    assert.ok(Number(a.prompt_tokens_estimated) > 0);

    assert.equal(b.stream, "true");
    assert.equal(b.completion_tokens, String(usageOf(streamed).output));
    assert.ok(Number(b.ttft_ms) >= 0 && Number(b.ttft_ms) <= records[1].duration_ms + 1, `ttft ${b.ttft_ms}`);
    assert.equal(b.tenant, null);

    assert.deepEqual([c.api, c.prompt_tokens, c.completion_tokens, c.usage_source], ["anthropic.messages", String(usageOf(anthropic).input), String(usageOf(anthropic).output), "upstream"]);

    // No usage in the stream: the completion is counted from the streamed text, the prompt is admission's estimate.
    assert.equal(d.usage_source, "estimated");
    assert.equal(d.prompt_tokens, d.prompt_tokens_estimated);
    assert.ok(Math.abs(Number(d.completion_tokens) - 6) <= 1, `completion ${d.completion_tokens}`);

    assert.deepEqual([e.outcome, e.admission, e.prompt_tokens, e.ttft_ms, records[4].status], ["rejected", "rejected:context_length_exceeded", null, null, 413]);
    assert.deepEqual([f.outcome, f.prompt_tokens, records[5].status], ["upstream_error", null, 500]);
    // Cut mid-stream: no usage came, so what streamed is counted, and the record says so.
    assert.deepEqual([g.outcome, g.usage_source, records[6].status], ["upstream_error", "estimated", 200]);
    assert.ok(Number(g.completion_tokens) >= 1 && Number(g.completion_tokens) <= 3, `completion ${g.completion_tokens}`);
    assert.match(records[6].details, /^upstream_reset_after_response_started/);
  });

  envoyTest("time to first token waits for content, not the first bytes; in-flight counts while streaming", scenario(), async (envoy) => {
    // The mock sends headers and a role-only chunk (empty content) at once, then one word per 300 ms:
    // eight words, so that the stream outlasts the flush period of the in-flight gauge.
    const pending = postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, max_tokens: 8, stream: true }, { "x-mock-chunk-delay-ms": "300" });
    await scrapeUntil(envoy, (s) => sumOf(s, "gen_ai_server_active_requests", { gen_ai_request_model: "gpt-4o" }) === 1);
    const res = await pending;
    assert.equal(res.status, 200);
    // The histogram comes with Envoy's stats flush, the gauge's fall with the filter's next batch.
    const samples = await scrapeUntil(envoy, (s) => sumOf(s, "gen_ai_server_time_to_first_token_count") === 1 && sumOf(s, "gen_ai_server_active_requests") === 0);
    assert.equal(sumOf(samples, "gen_ai_server_time_to_first_token_bucket", { le: "250" }), 0);
    assert.equal(sumOf(samples, "gen_ai_server_time_to_first_token_bucket", { le: "+Inf" }), 1);
    // Words 300 ms apart: 300 ms per token after the first.
    assert.equal(sumOf(samples, "gen_ai_server_time_per_output_token_bucket", { le: "200" }), 0);
    assert.equal(sumOf(samples, "gen_ai_server_time_per_output_token_bucket", { le: "400" }), 1);
    assert.equal(sumOf(samples, "gen_ai_server_active_requests"), 0);
    const [record] = await accessLog(envoy);
    assert.ok(Number(record.llm.ttft_ms) >= 300, `ttft ${record.llm.ttft_ms}`);
  });

  envoyTest("thousands of random model and tenant names keep the series bounded", scenario({ models: ["gpt-4o"], max_models: 5, tenant_header: "x-tenant", tenant_label: true, max_tenants: 3 }, 180_000), async (envoy) => {
    const before = parseExposition(await scrape(envoy)).filter((s) => ours(s.name)).length;
    const sent = 2000;
    const statuses = await pool(24, sent, async (i) => {
      const model = i % 10 === 0 ? "gpt-4o" : `m-${randomBytes(6).toString("hex")}`;
      const res = await postJson(envoy.url("/v1/chat/completions"), { model, messages: hello, max_tokens: 2 }, { "x-tenant": `t-${randomBytes(4).toString("hex")}` });
      return res.status;
    });
    assert.deepEqual([...new Set(statuses)], [200]);
    // Histograms reach the scrape with Envoy's stats flush, counters with each worker's batch.
    const samples = await scrapeUntil(envoy, (s) => sumOf(s, "gen_ai_server_request_duration_count") === sent && sumOf(s, "gen_ai_server_requests_total") === sent);
    const valuesOf = (label: string) => new Set(samples.map((s) => s.labels[label]).filter((v) => v !== undefined));
    const models = valuesOf("gen_ai_request_model");
    const answered = valuesOf("gen_ai_response_model");
    const tenants = valuesOf("llm_tenant");
    const random = [...models].filter((m) => m.startsWith("m-"));
    // Two workers share one set of slots: exactly the configured limit, not one set per worker.
    assert.equal(random.length, 5, [...models].join(", "));
    assert.deepEqual([...models].filter((m) => !m.startsWith("m-")).sort(), ["gpt-4o", "other"]);
    assert.ok([...answered].every((m) => models.has(m)), [...answered].join(", "));
    assert.equal([...tenants].filter((v) => v !== "other").length, 3, [...tenants].join(", "));
    assert.equal(sumOf(samples, "gen_ai_server_requests_total"), sent);
    assert.equal(sumOf(samples, "gen_ai_server_requests_total", { gen_ai_request_model: "other" }) > sent / 2, true);
    assert.equal(sumOf(samples, "llm_mesh_metric_series_dropped_total"), 0);
    const series = samples.filter((s) => !s.name.endsWith("_bucket")).length;
    process.stdout.write(`# ${sent} requests, ${sent - sent / 10} random model names, ${sent} random tenants: ${models.size} model labels, ${tenants.size} tenant labels, ${series} series (not counting buckets; ${before} before)\n`);
    assert.ok(series <= 7 * 4 * 8, `${series} series`);
  });
});

describe("metrics filter without the admission filter", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());

  envoyTest("reads the model from the body itself and publishes the facts", () => ({ scenario: "metrics-alone", vars: { UPSTREAM_PORT: mock.port, METRICS_CONFIG: metricsConfig } }), async (envoy) => {
    const res = await postJson(envoy.url("/v1/messages"), { model: "claude-3-5-sonnet-latest", messages: hello, max_tokens: 4 });
    assert.equal(res.status, 200);
    const list = await fetch(envoy.url("/v1/models"));
    assert.equal(list.status, 200);
    await list.text();
    const samples = await scrapeUntil(envoy, (s) => sumOf(s, "gen_ai_server_request_duration_count") === 2 && sumOf(s, "gen_ai_server_requests_total") === 2);
    assert.equal(sumOf(samples, "gen_ai_server_requests_total", { gen_ai_request_model: "claude-3-5-sonnet-latest", llm_api: "anthropic.messages" }), 1);
    // The model list counts under its own API, with no model and no tokens, not as a chat request.
    assert.equal(sumOf(samples, "gen_ai_server_requests_total", { gen_ai_request_model: "none", llm_api: "openai.models", llm_outcome: "admitted" }), 1);
    assert.equal(sumOf(samples, "gen_ai_server_requests_total"), 2);
    assert.equal(sumOf(samples, "gen_ai_usage_tokens_total", { llm_api: "openai.models" }), 0);
    const records = await accessLog(envoy);
    assert.equal(records.length, 2);
    const record = records[0];
    assert.deepEqual([record.llm.model_requested, record.llm.api, record.llm.admission, record.llm.outcome], ["claude-3-5-sonnet-latest", "anthropic.messages", null, "admitted"]);
    assert.ok(Number(record.llm.prompt_tokens_estimated) > 0);
  });
});

describe("metrics config validation in Envoy", () => {
  test("Envoy refuses to start with a bad config, naming the field and the reason", async () => {
    await assert.rejects(
      startEnvoy({ scenario: "metrics-alone", vars: { UPSTREAM_PORT: 9, METRICS_CONFIG: { max_models: 5000 } }, readyTimeoutMs: 15000 }),
      (error: Error) => {
        assert.match(error.message, /llm-metrics\[\d+\]: invalid configuration, refusing to start: max_models: must be an integer from 0 to 1000, got 5000/);
        return true;
      },
    );
  });
});
