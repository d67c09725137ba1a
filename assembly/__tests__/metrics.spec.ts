import { MetricsConfig, parseMetricsConfig } from "../metrics/config";
import {
  activeRequestsName, answerFigures, Ending, outcomeOf, RequestLabels, Series, SERIES_COUNT, seriesKind, statusClass, timePerOutputToken, wasServed,
} from "../metrics/policy";
import { UsageTracker } from "../llm/usage-tracker";
import { MetricKind } from "../telemetry/metric-table";
import { ClaimSlot, SlotResult } from "../telemetry/metric-labels";
import { isLabelSafe, LABEL_KEYS, TaggedName, tagRegex } from "../telemetry/metric-names";

function config(text: string): MetricsConfig {
  const parsed = parseMetricsConfig(text);
  expect(parsed.error).toBe("");
  return parsed.config!;
}

function configError(text: string): string {
  const parsed = parseMetricsConfig(text);
  expect(parsed.config).toBeNull();
  return parsed.error;
}

function ending(status: i64, details: string): Ending {
  const e = new Ending();
  e.status = status;
  e.details = details;
  return e;
}

function slots(taken: i64[], size: i32): StaticArray<i64> {
  const fields = new StaticArray<i64>(size + 1);
  fields[0] = taken.length;
  for (let i = 0; i < taken.length; i++) fields[i + 1] = taken[i];
  return fields;
}

describe("metrics config", () => {
  it("has working defaults for an empty config", () => {
    const c = config("");
    expect(c.maxModels).toBe(20);
    expect(c.maxSeries).toBe(4096);
    expect(c.tenantHeader).toBe("");
    expect(c.tenantLabel).toBe(false);
    expect(c.readBody).toBe(true);
    expect(c.records).toBe(true);
    expect(c.configuredLabel("gpt-4o")).toBeNull();
  });

  it("labels configured models by name and prefix families by their pattern", () => {
    const c = config('{"models":["gpt-4o","llama-3*","anthropic.claude-v2:1"],"max_models":0}');
    expect(c.configuredLabel("gpt-4o")).toBe("gpt-4o");
    expect(c.configuredLabel("llama-3-70b-instruct")).toBe("llama-3*");
    expect(c.configuredLabel("anthropic.claude-v2:1")).toBe("anthropic.claude-v2:1");
    expect(c.configuredLabel("gpt-4o-mini")).toBeNull();
    expect(c.maxModels).toBe(0);
  });

  it("refuses bad configs naming the field", () => {
    expect(configError('{"max_model":3}')).toBe("max_model: unknown key (allowed: models, max_models, tenant_header, tenant_label, max_tenants, max_series, read_body, max_body_bytes, records)");
    expect(configError('{"max_models":-1}')).toBe("max_models: must be an integer from 0 to 1000, got -1");
    expect(configError('{"models":["a*b"]}')).toBe("models[0]: a model name may end in * (a prefix match) but contain no other *");
    expect(configError('{"models":["*"]}')).toBe("models[0]: \"*\" alone would label every model with one value; list names or prefixes");
    expect(configError('{"models":["ok","has space"]}')).toBe("models[1]: must be at most 96 characters from A-Z a-z 0-9 - . _ / @ + :, got \"has space\"");
    expect(configError('{"tenant_label":true}')).toBe("tenant_label: needs tenant_header: the tenant is read from that request header");
    expect(configError('{"max_series":2}')).toBe("max_series: must be an integer from 16 to 1000000, got 2");
    expect(configError("[]")).toBe("(config): must be a JSON object, got an array");
  });
});

describe("metric names", () => {
  it("encodes labels the way Istio does, base name first", () => {
    const name = new TaggedName("gen_ai_server_requests_total").tag("gen_ai_request_model", "gpt-4o").tag("llm_route", "canary").toString();
    expect(name).toBe("gen_ai_server_requests_totalgen_ai_request_model=.=gpt-4o;.;llm_route=.=canary;.;");
    expect(tagRegex("llm_route")).toBe("(llm_route=\\.=(.*?);\\.;)");
  });

  it("has no label key that is the end of another (an unanchored regex would match inside it)", () => {
    for (let i = 0; i < LABEL_KEYS.length; i++) {
      for (let j = 0; j < LABEL_KEYS.length; j++) {
        if (i != j) expect(LABEL_KEYS[i].endsWith(LABEL_KEYS[j])).toBe(false);
      }
    }
  });

  it("lets only the model-name alphabet through as label values", () => {
    expect(isLabelSafe("gpt-4o-2024-08-06")).toBe(true);
    expect(isLabelSafe("meta-llama/Llama-3.1-8B-Instruct")).toBe(true);
    expect(isLabelSafe("anthropic.claude-3-5-sonnet-20240620-v1:0")).toBe(true);
    expect(isLabelSafe("")).toBe(false);
    expect(isLabelSafe("a;.;llm_route=.=canary")).toBe(false);
    expect(isLabelSafe("x\"y")).toBe(false);
    expect(isLabelSafe("new\nline")).toBe(false);
    expect(isLabelSafe("modèle")).toBe(false);
    expect(isLabelSafe("a*")).toBe(false);
    expect(isLabelSafe("m".repeat(96))).toBe(true);
    expect(isLabelSafe("m".repeat(97))).toBe(false);
  });

  it("names each metric with its own label set", () => {
    const labels = sampleLabels();
    expect(labels.requests()).toBe("gen_ai_server_requests_totalgen_ai_request_model=.=gpt-4o;.;llm_api=.=openai.chat;.;llm_route=.=primary;.;llm_status_class=.=2xx;.;llm_outcome=.=admitted;.;");
    expect(labels.duration()).toBe("gen_ai_server_request_durationgen_ai_request_model=.=gpt-4o;.;llm_api=.=openai.chat;.;llm_route=.=primary;.;llm_status_class=.=2xx;.;");
    expect(labels.timeToFirstToken()).toBe("gen_ai_server_time_to_first_tokengen_ai_request_model=.=gpt-4o;.;llm_api=.=openai.chat;.;llm_route=.=primary;.;");
    expect(labels.tokenUsage("input")).toBe("gen_ai_client_token_usagegen_ai_request_model=.=gpt-4o;.;llm_api=.=openai.chat;.;llm_route=.=primary;.;gen_ai_token_type=.=input;.;");
    expect(labels.usageTokens("output")).toBe("gen_ai_usage_tokens_totalgen_ai_request_model=.=gpt-4o;.;llm_api=.=openai.chat;.;llm_route=.=primary;.;gen_ai_response_model=.=gpt-4o-2024-08-06;.;gen_ai_token_type=.=output;.;");
    labels.tenant = "acme";
    expect(labels.requests().endsWith("llm_tenant=.=acme;.;")).toBe(true);
    expect(labels.duration().includes("llm_tenant")).toBe(false);
    expect(activeRequestsName("other")).toBe("gen_ai_server_active_requestsgen_ai_request_model=.=other;.;");
  });

  it("names every series a request records, counters and histograms", () => {
    const labels = sampleLabels();
    expect(labels.name(Series.Requests)).toBe(labels.requests());
    expect(labels.name(Series.Duration)).toBe(labels.duration());
    expect(labels.name(Series.TimeToFirstToken)).toBe(labels.timeToFirstToken());
    expect(labels.name(Series.TimePerOutputToken)).toBe(labels.timePerOutputToken());
    expect(labels.name(Series.InputTokenUsage)).toBe(labels.tokenUsage("input"));
    expect(labels.name(Series.OutputTokenUsage)).toBe(labels.tokenUsage("output"));
    expect(labels.name(Series.InputUsageTokens)).toBe(labels.usageTokens("input"));
    expect(labels.name(Series.OutputUsageTokens)).toBe(labels.usageTokens("output"));
    let counters = 0;
    for (let i = 0; i < SERIES_COUNT; i++) if (seriesKind(<Series>i) == MetricKind.Counter) counters++;
    expect(counters).toBe(3);
    expect(seriesKind(Series.Duration)).toBe(MetricKind.Histogram);
  });

  it("tells label sets apart by every value, so that a request finds its series without their names", () => {
    const a = sampleLabels();
    const b = sampleLabels();
    expect(a.equals(b)).toBe(true);
    expect(a.hash()).toBe(b.hash());
    b.tenant = "acme";
    expect(a.equals(b)).toBe(false);
    expect(a.hash()).not.toBe(b.hash());
    // A value moved from one label to the next is another set (the hash closes each value).
    const c = sampleLabels();
    const d = sampleLabels();
    c.requestModel = "ab";
    c.responseModel = "c";
    d.requestModel = "a";
    d.responseModel = "bc";
    expect(c.equals(d)).toBe(false);
    expect(c.hash()).not.toBe(d.hash());
  });
});

function sampleLabels(): RequestLabels {
  const labels = new RequestLabels();
  labels.requestModel = "gpt-4o";
  labels.responseModel = "gpt-4o-2024-08-06";
  labels.api = "openai.chat";
  labels.route = "primary";
  labels.statusClass = "2xx";
  labels.outcome = "admitted";
  return labels;
}

describe("metrics policy", () => {
  it("classes statuses, with none when nothing was sent", () => {
    expect(statusClass(200)).toBe("2xx");
    expect(statusClass(429)).toBe("4xx");
    expect(statusClass(503)).toBe("5xx");
    expect(statusClass(0)).toBe("none");
    expect(statusClass(-1)).toBe("none");
    expect(statusClass(600)).toBe("none");
    expect(statusClass(101)).toBe("1xx");
    expect(statusClass(599)).toBe("5xx");
  });

  it("lets a filter's refusal win over everything else", () => {
    expect(outcomeOf("rejected:context_length_exceeded", null, ending(413, "llm-admission_context_length_exceeded"))).toBe("rejected");
    expect(outcomeOf("admitted", "rejected", ending(429, "llm-throttle_rate_limited"))).toBe("throttled");
    expect(outcomeOf("admitted", "rejected:tokens", ending(429, ""))).toBe("throttled");
    expect(outcomeOf("admitted", "waiting:team-a", ending(0, "downstream_remote_disconnect"))).toBe("cancelled");
    expect(outcomeOf("admitted", "waiting:team-a", ending(504, "stream_timeout"))).toBe("throttled");
  });

  it("tells upstream failures and clients that left from answers", () => {
    expect(outcomeOf("admitted", null, ending(503, "upstream_reset_before_response_started{connection_failure}"))).toBe("upstream_error");
    expect(outcomeOf("admitted", null, ending(200, "upstream_reset_after_response_started{remote_reset}"))).toBe("upstream_error");
    expect(outcomeOf(null, null, ending(500, "via_upstream"))).toBe("upstream_error");
    expect(outcomeOf(null, null, ending(504, "upstream_response_timeout"))).toBe("upstream_error");
    expect(outcomeOf(null, null, ending(0, "downstream_remote_disconnect"))).toBe("cancelled");
    expect(outcomeOf(null, null, ending(0, ""))).toBe("cancelled");
    expect(outcomeOf(null, null, ending(400, "via_upstream"))).toBe("admitted");
  });

  it("reports how the throttle let the request through, tolerating absent and unknown values", () => {
    expect(outcomeOf("admitted", "queued", ending(200, "via_upstream"))).toBe("queued");
    expect(outcomeOf("admitted", "admitted_after_wait", ending(200, "via_upstream"))).toBe("queued");
    expect(outcomeOf("admitted", "redirected:small-model", ending(200, "via_upstream"))).toBe("redirected");
    expect(outcomeOf("clamped", "redirected", ending(200, "via_upstream"))).toBe("redirected");
    expect(outcomeOf("passed_through", "admitted", ending(200, "via_upstream"))).toBe("admitted");
    expect(outcomeOf(null, "something-new", ending(200, "via_upstream"))).toBe("admitted");
    expect(outcomeOf("", "", ending(200, "via_upstream"))).toBe("admitted");
  });

  it("lets only answered requests claim a label slot", () => {
    expect(wasServed("admitted", 200)).toBe(true);
    expect(wasServed("redirected", 201)).toBe(true);
    expect(wasServed("admitted", 404)).toBe(false);
    expect(wasServed("rejected", 200)).toBe(false);
    expect(wasServed("upstream_error", 200)).toBe(false);
  });

  it("divides the streaming time after the first token by the tokens after it", () => {
    expect(timePerOutputToken(1000, 1400, 5)).toBe(100);
    expect(timePerOutputToken(1000, 1010, 4)).toBe(3);
    expect(timePerOutputToken(1000, 1000, 1)).toBe(-1);
    expect(timePerOutputToken(-1, 1000, 10)).toBe(-1);
    expect(timePerOutputToken(1000, 900, 10)).toBe(-1);
  });
});

describe("an answer's figures", () => {
  const answer = (stream: bool, text: string, atMs: i64): UsageTracker => {
    const tracker = new UsageTracker(stream);
    tracker.onChunk(Uint8Array.wrap(String.UTF8.encode(text)), atMs);
    tracker.finish();
    return tracker;
  };

  it("takes reported usage as reported, and times the first streamed text from the request's start", () => {
    const figures = answerFigures(answer(true, 'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}\n\n', 1250), 30, 1000);
    expect(figures.ttftMs).toBe(250);
    expect(figures.promptTokens).toBe(9);
    expect(figures.completionTokens).toBe(4);
    expect(figures.reported).toBe(true);
  });

  it("counts what the answer did not report, with the estimate for the prompt; no time for a JSON answer", () => {
    const figures = answerFigures(answer(false, '{"choices":[{"message":{"content":"Hello there"}}]}', 1250), 30, 1000);
    expect(figures.ttftMs).toBe(-1);
    expect(figures.promptTokens).toBe(30);
    expect(figures.completionTokens).toBeGreaterThan(0);
    expect(figures.reported).toBe(false);
  });

  it("has no tokens for an answer in which the model did no work", () => {
    const figures = answerFigures(answer(false, '{"error":{"message":"overloaded"}}', 1250), 30, 1000);
    expect(figures.promptTokens).toBe(-1);
    expect(figures.completionTokens).toBe(-1);
  });
});

describe("label slots", () => {
  it("finds a value that holds a slot without writing", () => {
    const claim = new ClaimSlot(7, 3, true);
    expect(claim.apply(slots([5, 7], 3), true)).toBe(false);
    expect(claim.result).toBe(SlotResult.Found);
    expect(claim.sawFull).toBe(false);
  });

  it("takes a free slot only when allowed", () => {
    const fields = slots([5], 3);
    const denied = new ClaimSlot(9, 3, false);
    expect(denied.apply(fields, true)).toBe(false);
    expect(denied.result).toBe(SlotResult.Absent);
    const claim = new ClaimSlot(9, 3, true);
    expect(claim.apply(fields, true)).toBe(true);
    expect(claim.result).toBe(SlotResult.Added);
    expect(fields[0]).toBe(2);
    expect(fields[2]).toBe(9);
    expect(claim.takesLast).toBe(false);
  });

  it("reports the last slot taken and a full record as final", () => {
    const fields = slots([5, 6], 3);
    const last = new ClaimSlot(9, 3, true);
    expect(last.apply(fields, true)).toBe(true);
    expect(last.takesLast).toBe(true);
    const late = new ClaimSlot(11, 3, true);
    expect(late.apply(fields, true)).toBe(false);
    expect(late.result).toBe(SlotResult.Absent);
    expect(late.sawFull).toBe(true);
    expect(late.held.length).toBe(3);
  });

  it("survives a record written with a larger limit or a corrupt count", () => {
    const fields = slots([1, 2, 3, 4], 4);
    const claim = new ClaimSlot(4, 2, true);
    expect(claim.apply(fields, true)).toBe(false);
    expect(claim.result).toBe(SlotResult.Absent);
    expect(claim.sawFull).toBe(true);
    const corrupt = new StaticArray<i64>(3);
    corrupt[0] = -5;
    const fresh = new ClaimSlot(8, 2, true);
    expect(fresh.apply(corrupt, true)).toBe(true);
    expect(corrupt[0]).toBe(1);
  });
});
