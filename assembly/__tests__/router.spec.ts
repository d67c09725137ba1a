import { findModelField, withModel } from "../router/body";
import { GuardConfig, parseRouterConfig, RouterConfig, Target } from "../router/config";
import { addSample, GUARD_FIELDS, isOpenAt, reopen, Sample, SampleResult, trippedUntil, tripsOf, windowStats } from "../router/guard";
import { decide, Decision, How, RequestView, RouteInput, stickyBucket, TargetHealth, Verdict, verdictOf } from "../router/policy";
import { AnswerTracker, ComparisonRecord } from "../router/record";
import { bucketOf, hex64, StableHasher, stableHash } from "../text/stable-hash";

function config(text: string): RouterConfig {
  const parsed = parseRouterConfig(text);
  expect(parsed.error).toBe("");
  return parsed.config!;
}

function configError(text: string): string {
  const parsed = parseRouterConfig(text);
  expect(parsed.config).toBeNull();
  return parsed.error;
}

class Headers extends RequestView {
  names: string[] = [];
  values: string[] = [];

  set(name: string, value: string): Headers {
    this.names.push(name);
    this.values.push(value);
    return this;
  }

  header(name: string): string | null {
    const i = this.names.indexOf(name);
    return i >= 0 ? this.values[i] : null;
  }
}

class Health extends TargetHealth {
  tripped: string[] = [];
  asked: i32 = 0;

  isOpen(target: Target): bool {
    this.asked++;
    return !this.tripped.includes(target.name);
  }
}

function route(c: RouterConfig, headers: Headers, model: string = "", clientRoute: string | null = null, health: Health = new Health(), random: u64 = 0): Decision {
  const input = new RouteInput();
  input.model = model;
  input.clientRoute = clientRoute;
  input.random = random;
  return decide(c, headers, input, health);
}

function bytes(text: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(text));
}

const RULES = `{
  "targets": {
    "primary": {},
    "canary": {"rewrite_model": "gpt-4o-2024-11-20", "guard": {"window_ms": 1000, "min_requests": 4, "max_error_rate": 0.5, "cooldown_ms": 500}},
    "claude": {}
  },
  "sticky_header": "x-user-id",
  "rules": [
    {"name": "testers", "match": {"headers": [{"name": "X-Tester", "present": true}]}, "trust_client_route": true},
    {"name": "beta", "match": {"headers": [{"name": "x-group", "exact": "beta"}, {"name": "x-region", "prefix": "eu-"}]}, "target": "canary"},
    {"name": "no-tenant", "match": {"headers": [{"name": "x-tenant", "present": false}], "models": ["claude-*"]}, "target": "claude"},
    {"name": "split", "match": {"models": ["gpt-4o", "gpt-4o-mini*"]}, "weights": {"primary": 87.5, "canary": 12.5}}
  ]
}`;

describe("router config", () => {
  it("has working defaults for an empty config", () => {
    const c = config("");
    expect(c.routeHeader).toBe("x-llm-route");
    expect(c.modelHeader).toBe("");
    expect(c.targets.length).toBe(2);
    expect(c.primary.name).toBe("primary");
    expect(c.defaultTarget.name).toBe("primary");
    expect(c.targetNamed("canary")).not.toBeNull();
    expect(c.rules.length).toBe(0);
    expect(c.needsModel).toBe(false);
    expect(c.maxBodyBytes).toBe(1048576);
    expect(c.record.enabled).toBe(false);
  });

  it("reads rules, weights in hundredths and lower-cased header names", () => {
    const c = config(RULES);
    expect(c.rules.length).toBe(4);
    expect(c.rules[0].headers[0].name).toBe("x-tester");
    expect(c.rules[0].trustClientRoute).toBe(true);
    const weights = c.rules[3].weights!;
    expect(weights.weightOf(c.targetNamed("canary")!)).toBe(1250);
    expect(weights.bounds[1]).toBe(10000);
    expect(c.rules[3].stickyHeader).toBe("x-user-id");
    expect(c.needsModel).toBe(true);
    const canary = c.targetNamed("canary")!;
    expect(canary.rewriteModel).toBe("gpt-4o-2024-11-20");
    expect(canary.guard!.minRequests).toBe(4);
    expect(canary.guard!.maxMeanLatencyMs).toBe(0);
  });

  it("leaves its decision in Envoy's filter state unless told otherwise", () => {
    expect(config("").filterState).toBe(true);
    expect(config('{"filter_state": false}').filterState).toBe(false);
    expect(configError('{"filter_state": "no"}')).toBe('filter_state: must be true or false, got "no"');
  });

  it("turns records on with the record section and reads the shadow rewrite", () => {
    const c = config('{"record": {"preview_chars": 8}, "shadow": {"rewrite_model": "gpt-4o-mini"}, "model_header": "X-Model"}');
    expect(c.record.enabled).toBe(true);
    expect(c.record.log).toBe(false);
    expect(c.record.previewChars).toBe(8);
    expect(c.shadowRewriteModel).toBe("gpt-4o-mini");
    expect(c.modelHeader).toBe("x-model");
    expect(c.needsModel).toBe(true);
  });

  it("reads hold_headers_timeout_ms as admission does, and knows when headers may wait for the body", () => {
    expect(config("{}").holdHeadersTimeoutMs).toBe(1000);
    expect(config('{"hold_headers_timeout_ms": 250}').holdHeadersTimeoutMs).toBe(250);
    expect(configError('{"hold_headers_timeout_ms": 9}')).toBe("hold_headers_timeout_ms: must be an integer from 10 to 60000, got 9");
    expect(configError('{"hold_headers_timeout_ms": 60001}')).toBe("hold_headers_timeout_ms: must be an integer from 10 to 60000, got 60001");
    expect(config("{}").mayHoldHeaders).toBe(false);
    expect(config('{"model_header": "x-model"}').mayHoldHeaders).toBe(true);
    expect(config('{"targets": {"primary": {}, "canary": {"rewrite_model": "m"}}}').mayHoldHeaders).toBe(true);
    expect(config('{"shadow": {"rewrite_model": "m"}}').mayHoldHeaders).toBe(true);
  });

  it("refuses bad configs naming the field and the reason", () => {
    expect(configError("{")).toBe("(config): not valid JSON: unexpected end of input at byte 1");
    expect(configError('{"rule": []}')).toBe("rule: unknown key (allowed: route_header, model_header, primary, default_target, targets, rules, sticky_header, max_body_bytes, shadow, record, hold_headers_timeout_ms, filter_state)");
    expect(configError('{"route_header": "x llm"}')).toBe("route_header: \"x llm\" is not a header name (letters, digits and !#$%&'*+-.^_`|~ only; no pseudo-headers)");
    expect(configError('{"route_header": ":authority"}')).toBe("route_header: \":authority\" is not a header name (letters, digits and !#$%&'*+-.^_`|~ only; no pseudo-headers)");
    expect(configError('{"route_header": "Content-Length"}')).toBe("route_header: \"content-length\" is managed by Envoy and cannot be used here");
    expect(configError('{"model_header": "x-llm-route"}')).toBe("model_header: must differ from route_header");
    expect(configError('{"targets": {"main": {}}}')).toBe("targets: no target named \"primary\" (targets: main); the primary target must exist");
    expect(configError('{"targets": {"primary": {}}, "primary": "main"}')).toBe("primary: no target named \"main\" (targets: primary); the primary target must exist");
    expect(configError('{"targets": {"primary": {"guard": {}}}}')).toBe("targets.primary.guard: the primary target cannot be guarded: it is where traffic goes when a guard trips");
    expect(configError('{"targets": {"Canary!": {}}}')).toBe("targets.Canary!: a target name must be 1 to 64 characters of a-z, 0-9, '-', '_' or '.'");
    expect(configError('{"targets": {"primary": {}, "canary": {"guard": {"max_error_rate": 1.5}}}}')).toBe("targets.canary.guard.max_error_rate: must be a number from 0.0 to 1.0, got 1.5");
    expect(configError('{"targets": {"primary": {}, "canary": {"guard": {"window": 5}}}}')).toBe("targets.canary.guard.window: unknown key (allowed: window_ms, min_requests, max_error_rate, max_mean_latency_ms, cooldown_ms)");
    expect(configError('{"targets": {"primary": {}, "canary": {"rewrite_model": ""}}}')).toBe("targets.canary.rewrite_model: must be a model name of 1 to 256 characters");
    expect(configError('{"default_target": "blue"}')).toBe("default_target: unknown target \"blue\" (targets: primary, canary)");
    expect(configError('{"rules": [{"target": "canary"}, {"target": "blue"}]}')).toBe("rules[1].target: unknown target \"blue\" (targets: primary, canary)");
    expect(configError('{"rules": [{"name": "x"}]}')).toBe("rules[0]: needs a target or weights (or trust_client_route)");
    expect(configError('{"rules": [{"target": "canary", "weights": {"primary": 100}}]}')).toBe("rules[0]: has both target and weights; a rule picks one way");
    expect(configError('{"rules": [{"weights": {"primary": 90, "canary": 5}}]}')).toBe("rules[0].weights: must add up to 100, got 95");
    expect(configError('{"rules": [{"weights": {"primary": 90.05, "canary": 9.5}}]}')).toBe("rules[0].weights: must add up to 100, got 99.55");
    expect(configError('{"rules": [{"weights": {"primary": 90.001, "canary": 9.999}}]}')).toBe("rules[0].weights.primary: must be a percentage from 0 to 100 with at most two decimals");
    expect(configError('{"rules": [{"weights": {"primary": "90", "canary": 10}}]}')).toBe("rules[0].weights.primary: must be a percentage from 0 to 100 with at most two decimals");
    expect(configError('{"rules": [{"weights": {"blue": 100}}]}')).toBe("rules[0].weights.blue: unknown target \"blue\" (targets: primary, canary)");
    expect(configError('{"rules": [{"weights": {}}]}')).toBe("rules[0].weights: must give at least one target a weight");
    expect(configError('{"rules": [{"match": {"headers": [{"name": "x-a", "exact": "1", "prefix": "2"}]}, "target": "canary"}]}')).toBe("rules[0].match.headers[0]: needs exactly one of exact, prefix or present");
    expect(configError('{"rules": [{"match": {"headers": [{"exact": "1"}]}, "target": "canary"}]}')).toBe("rules[0].match.headers[0].name: must not be empty");
    expect(configError('{"rules": [{"match": {"headers": [{"name": "x-llm-route", "exact": "canary"}]}, "target": "canary"}]}')).toBe("rules[0].match.headers[0].name: the routing header is removed before rules run; to let clients pick their side use trust_client_route");
    expect(configError('{"rules": [{"match": {"models": ["gpt-*-mini"]}, "target": "canary"}]}')).toBe("rules[0].match.models[0]: a model name may end in * (a prefix match) but contain no other *");
    expect(configError('{"rules": [{"match": {"model": "gpt-4o"}, "target": "canary"}]}')).toBe("rules[0].match.model: unknown key (allowed: headers, models)");
    expect(configError('{"record": {"preview_chars": 100000}}')).toBe("record.preview_chars: must be an integer from 0 to 4096, got 100000");
    expect(configError('{"max_body_bytes": 0}')).toBe("max_body_bytes: must be an integer from 1 to 67108864, got 0");
  });
});

describe("router decisions", () => {
  it("sends a request no rule matches to the default target", () => {
    const d = route(config(RULES), new Headers(), "llama-3");
    expect(d.target.name).toBe("primary");
    expect(d.how).toBe(How.Default);
    expect(d.rule).toBeNull();
    expect(d.describe()).toBe("target=primary by=default");
  });

  it("matches exact, prefix, present and absent headers; the first matching rule wins", () => {
    const c = config(RULES);
    expect(route(c, new Headers().set("x-group", "beta").set("x-region", "eu-west"), "gpt-4o").target.name).toBe("canary");
    // Both conditions of a rule must hold.
    expect(route(c, new Headers().set("x-group", "beta").set("x-region", "us-east"), "llama").target.name).toBe("primary");
    expect(route(c, new Headers().set("x-group", "beta-2").set("x-region", "eu-west"), "llama").target.name).toBe("primary");
    expect(route(c, new Headers(), "claude-3-5-sonnet").target.name).toBe("claude");
    expect(route(c, new Headers().set("x-tenant", "a"), "claude-3-5-sonnet").target.name).toBe("primary");
    const d = route(c, new Headers().set("x-group", "beta").set("x-region", "eu-1"), "claude-3");
    expect(d.rule!.name).toBe("beta");
    expect(d.describe()).toBe("target=canary by=outright rule=beta");
  });

  it("needs a known model for a model rule", () => {
    const c = config(RULES);
    expect(route(c, new Headers(), "").target.name).toBe("primary");
    expect(route(c, new Headers().set("x-user-id", "u1"), "gpt-4o-mini-2024").rule!.name).toBe("split");
    expect(route(c, new Headers().set("x-user-id", "u1"), "gpt-4o-2024").rule).toBeNull();
  });

  it("follows a client's routing header only where a rule trusts it, and only to a known target", () => {
    const c = config(RULES);
    const tester = new Headers().set("x-tester", "1");
    const trusted = route(c, tester, "llama", "canary");
    expect(trusted.target.name).toBe("canary");
    expect(trusted.how).toBe(How.Trusted);
    // An unknown name, or none: the trusting rule has no pick of its own, so the next rules decide.
    expect(route(c, tester, "llama", "blue").target.name).toBe("primary");
    expect(route(c, tester, "claude-x", null).target.name).toBe("claude");
    // No trusting rule matches: the header is ignored.
    expect(route(c, new Headers(), "llama", "canary").target.name).toBe("primary");
  });

  it("keeps a sticky key on one side and splits keys by the weights", () => {
    const c = config(RULES);
    const canary = c.targetNamed("canary")!;
    let onCanary = 0;
    const users = 10000;
    for (let i = 0; i < users; i++) {
      const headers = new Headers().set("x-user-id", "user-" + i.toString());
      const first = route(c, headers, "gpt-4o", null, new Health(), <u64>i);
      const again = route(c, headers, "gpt-4o", null, new Health(), <u64>(i * 7919 + 13));
      expect(first.target).toBe(again.target);
      expect(first.how).toBe(How.Sticky);
      if (first.target == canary) onCanary++;
    }
    const share = <f64>onCanary / <f64>users;
    expect(share).toBeGreaterThan(0.115);
    expect(share).toBeLessThan(0.135);
  });

  it("keeps the canary's users there when its weight grows", () => {
    const small = config('{"rules": [{"weights": {"primary": 95, "canary": 5}, "sticky_header": "x-user"}]}');
    const large = config('{"rules": [{"weights": {"primary": 70, "canary": 30}, "sticky_header": "x-user"}]}');
    for (let i = 0; i < 2000; i++) {
      const headers = new Headers().set("x-user", "u" + i.toString());
      if (route(small, headers).target.name == "canary") expect(route(large, headers).target.name).toBe("canary");
    }
  });

  it("splits at random without a sticky key", () => {
    const c = config('{"rules": [{"weights": {"primary": 75, "canary": 25}}]}');
    let onCanary = 0;
    for (let i = 0; i < 8000; i++) {
      const d = route(c, new Headers(), "", null, new Health(), <u64>i);
      expect(d.how).toBe(How.Random);
      if (d.target.name == "canary") onCanary++;
    }
    expect(onCanary).toBeGreaterThan(1800);
    expect(onCanary).toBeLessThan(2200);
  });

  it("sends a tripped target's requests to the primary and asks only about guarded targets", () => {
    const c = config(RULES);
    const health = new Health();
    health.tripped.push("canary");
    const d = route(c, new Headers().set("x-group", "beta").set("x-region", "eu-1"), "", null, health);
    expect(d.target.name).toBe("primary");
    expect(d.chosen.name).toBe("canary");
    expect(d.diverted).toBe(true);
    expect(d.describe()).toBe("target=primary by=outright rule=beta guarded=canary");
    expect(health.asked).toBe(1);
    route(c, new Headers(), "claude-3", null, health);
    expect(health.asked).toBe(1);
  });

  it("counts server errors, resets and timeouts against a target, and leaves client disconnects out", () => {
    expect(verdictOf(200, "via_upstream")).toBe(Verdict.Succeeded);
    expect(verdictOf(429, "via_upstream")).toBe(Verdict.Succeeded);
    expect(verdictOf(500, "via_upstream")).toBe(Verdict.Failed);
    expect(verdictOf(503, "upstream_reset_before_response_started{connection_termination}")).toBe(Verdict.Failed);
    expect(verdictOf(504, "upstream_response_timeout")).toBe(Verdict.Failed);
    expect(verdictOf(200, "upstream_reset_after_response_started{connection_termination}")).toBe(Verdict.Failed);
    expect(verdictOf(0, "upstream_reset_after_response_started{remote_reset}")).toBe(Verdict.Failed);
    expect(verdictOf(0, "downstream_remote_disconnect")).toBe(Verdict.Unjudged);
  });
});

function canaryGuard(): GuardConfig {
  return config(RULES).targetNamed("canary")!.guard!;
}

describe("rollout guard window", () => {
  it("trips once the error rate passes the threshold over enough requests, then cools down", () => {
    const guard = canaryGuard();
    const fields = new StaticArray<i64>(GUARD_FIELDS);
    const now: i64 = 100000;
    // Three failures are fewer than min_requests: no verdict yet.
    for (let i = 0; i < 3; i++) expect(addSample(fields, guard, now + i, new Sample(0, 20, true)).result).toBe(SampleResult.Counted);
    const tripped = addSample(fields, guard, now + 3, new Sample(0, 20, true));
    expect(tripped.result).toBe(SampleResult.Tripped);
    expect(tripped.reason).toBe("error rate 100% over 4 requests is above max_error_rate 50%");
    expect(tripsOf(fields)).toBe(1);
    expect(trippedUntil(fields)).toBe(now + 3 + 500);
    expect(isOpenAt(fields, now + 10)).toBe(false);
    // Samples of requests routed before the trip, or while tripped, are not counted.
    expect(addSample(fields, guard, now + 600, new Sample(0, 20, true)).result).toBe(SampleResult.Ignored);
    expect(addSample(fields, guard, now + 10, new Sample(1, 20, true)).result).toBe(SampleResult.Ignored);
    expect(isOpenAt(fields, now + 503)).toBe(true);
    expect(reopen(fields, now + 400)).toBe(false);
    expect(reopen(fields, now + 600)).toBe(true);
    expect(reopen(fields, now + 700)).toBe(false);
    // The next try starts from an empty window.
    expect(windowStats(fields, guard, now + 700).requests).toBe(0);
    expect(addSample(fields, guard, now + 700, new Sample(1, 20, false)).result).toBe(SampleResult.Counted);
  });

  it("stays open while failures stay under the rate, and forgets samples older than the window", () => {
    const guard = canaryGuard();
    const fields = new StaticArray<i64>(GUARD_FIELDS);
    const now: i64 = 5000000;
    for (let i = 0; i < 10; i++) expect(addSample(fields, guard, now + i, new Sample(0, 20, i % 3 == 0)).result).toBe(SampleResult.Counted);
    expect(windowStats(fields, guard, now + 10).failures).toBe(4);
    // A second later the window is empty again; three fresh failures are still too few to judge.
    for (let i = 0; i < 3; i++) expect(addSample(fields, guard, now + 1200 + i, new Sample(0, 20, true)).result).toBe(SampleResult.Counted);
    expect(windowStats(fields, guard, now + 1203).requests).toBe(3);
  });

  it("trips on mean latency when a limit is set", () => {
    const slow = config('{"targets": {"primary": {}, "canary": {"guard": {"min_requests": 3, "max_mean_latency_ms": 200, "max_error_rate": 1}}}}').targetNamed("canary")!.guard!;
    const fields = new StaticArray<i64>(GUARD_FIELDS);
    expect(addSample(fields, slow, 1000, new Sample(0, 100, true)).result).toBe(SampleResult.Counted);
    expect(addSample(fields, slow, 1001, new Sample(0, 150, true)).result).toBe(SampleResult.Counted);
    const outcome = addSample(fields, slow, 1002, new Sample(0, 500, false));
    expect(outcome.result).toBe(SampleResult.Tripped);
    expect(outcome.reason).toBe("mean latency 250 ms over 3 requests is above max_mean_latency_ms 200");
  });
});

describe("model field", () => {
  it("finds and rewrites the top-level model, keeping every other byte", () => {
    const body = bytes('{"messages":[{"role":"user","content":"{\\"model\\":\\"x\\"}"}],\n "model" : "gpt-4o", "stream":true}');
    const field = findModelField(body);
    expect(field.found).toBe(true);
    expect(field.model).toBe("gpt-4o");
    const out = String.UTF8.decode(withModel(body, field, "gpt-4o-2024-11-20").buffer);
    expect(out).toBe('{"messages":[{"role":"user","content":"{\\"model\\":\\"x\\"}"}],\n "model" : "gpt-4o-2024-11-20", "stream":true}');
  });

  it("decodes escapes and writes a rewritten name as a JSON string", () => {
    const body = bytes('{"model":"gpt\\u002d4o"}');
    const field = findModelField(body);
    expect(field.model).toBe("gpt-4o");
    expect(String.UTF8.decode(withModel(body, field, 'a"b').buffer)).toBe('{"model":"a\\"b"}');
  });

  it("has no usable model in bodies that are not JSON, lack one or name two", () => {
    expect(findModelField(bytes('{"model":"a","model":"b"}')).problem).toBe("the body names the model twice");
    expect(findModelField(bytes('{"model":"a","model":"b"}')).found).toBe(false);
    expect(findModelField(bytes('{"model":5}')).problem).toBe("model is not a string");
    expect(findModelField(bytes('{"messages":[]}')).problem).toBe("the body has no model");
    expect(findModelField(bytes("[1]")).problem).toBe("the body is not a JSON object");
    expect(findModelField(bytes('{"model":"a",')).problem).toBe("the body is not valid JSON: expected a key");
    expect(findModelField(bytes("")).found).toBe(false);
  });
});

describe("stable hash", () => {
  it("is FNV-1a over UTF-8 with a full-avalanche finish, the same for any split of the text", () => {
    // Reference values from an independent implementation (Python, over the UTF-8 bytes).
    expect(hex64(stableHash(""))).toBe("efd01f60ba992926");
    expect(hex64(stableHash("a"))).toBe("82a2a958a9bece5b");
    expect(hex64(stableHash("héllo 🌍"))).toBe("f5170341c64977ba");
    expect(stickyBucket("user-42")).toBe(6389);
    const whole = stableHash("héllo 🌍");
    const pieces = new StableHasher();
    pieces.addString("hé");
    pieces.addString("llo 🌍");
    expect(pieces.digest()).toBe(whole);
    expect(stableHash("user-1")).not.toBe(stableHash("user-2"));
    expect(bucketOf(0xffffffffffffffff, 10000)).toBe(9999);
    expect(bucketOf(0, 10000)).toBe(0);
  });
});

describe("comparison record", () => {
  it("hashes and previews the answer of a JSON body and of an SSE stream alike", () => {
    const json = new AnswerTracker(false, 9);
    json.onChunk(bytes('{"model":"gpt-4o-mini","choices":[{"message":{"content":"Hello there, mesh"}}],"usage":{"prompt_tokens":7,"completion_tokens":4}}'), 10);
    json.finish();
    const sse = new AnswerTracker(true, 9);
    sse.onChunk(bytes('data: {"model":"gpt-4o","choices":[{"delta":{"content":"Hello "}}]}\n\ndata: {"choices":[{"delta":{"content":"there, mesh"}}]}\n\ndata: [DONE]\n\n'), 10);
    sse.finish();
    expect(json.answerHash).toBe(sse.answerHash);
    expect(json.preview).toBe("Hello the");
    expect(sse.answerChars).toBe(17);

    const record = new ComparisonRecord();
    record.requestId = "r-1";
    record.side = "primary";
    record.model = "gpt-4o";
    record.upstreamModel = "gpt-4o-mini";
    record.status = 200;
    record.latencyMs = 12;
    record.tracker = json;
    expect(record.toJson()).toBe('{"id":"r-1","side":"primary","model":"gpt-4o","upstream_model":"gpt-4o-mini","status":200,"latency_ms":12,"response_model":"gpt-4o-mini","prompt_tokens":7,"completion_tokens":4,"usage":"reported","bytes":129,"answer_hash":"' + json.answerHash + '","answer_chars":17,"preview":"Hello the"}');
  });

  it("writes what it has when there was no answer", () => {
    const record = new ComparisonRecord();
    record.requestId = "r-2";
    record.side = "shadow";
    record.model = "gpt-4o";
    record.status = 503;
    expect(record.toJson()).toBe('{"id":"r-2","side":"shadow","model":"gpt-4o","status":503,"latency_ms":0}');
  });
});
