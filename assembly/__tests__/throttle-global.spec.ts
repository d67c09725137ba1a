import { Backend, FailureMode, Rule } from "../throttle/config";
import { configOf, errorOf } from "./throttle-configs";
import { Check, Choice, decide, Deny, F_CREDIT_INPUT, F_CREDIT_TOKENS, F_CREDIT_UNTIL, F_OVER_DENY, F_OVER_UNTIL, FIELDS, Reservation, RuleAnswer } from "../throttle/policy";
import {
  addCredit, Ask, askFor, C_FAILURES, C_OPEN_UNTIL, CIRCUIT_FIELDS, circuitWaitMs, Credit, gate, Gate, globalKeyHex, Hits, hitsAsCredit, joinCredit, noteFailure,
  noteSuccess, Outcome, overUse, planAsk, readAnswer, rememberOverLimit, tooLargeForService, underUse,
} from "../throttle/global-policy";
import { DescriptorStatus, RateLimitCode, RateLimitResponse, RateLimitUnit } from "../ratelimit/rls";

const SERVICE = '"rate_limit_service":{"cluster":"ratelimit","domain":"llm-mesh"}';
const T0: i64 = 1_700_000_000_000;


/** A global rule with these limits (JSON), under a service. */
function globalRule(limits: string, extra: string = ""): Rule {
  return configOf("{" + SERVICE + ',"rules":[{"name":"g","key":["header:x-tenant"],"backend":"global","limits":' + limits + extra + "}]}").rules[0];
}

function status(code: RateLimitCode, remaining: u32, reset: i64): DescriptorStatus {
  const s = new DescriptorStatus();
  s.code = code;
  s.hasLimit = true;
  s.limitRemaining = remaining;
  s.resetSeconds = reset;
  return s;
}

function response(overall: RateLimitCode, statuses: DescriptorStatus[]): RateLimitResponse {
  const r = new RateLimitResponse();
  r.overallCode = overall;
  r.statuses = statuses;
  return r;
}

function hits(requests: i64, tokens: i64): Hits {
  const h = new Hits();
  h.requests = requests;
  h.tokens = tokens;
  return h;
}

function credit(tokens: i64, until: i64): Credit {
  const c = new Credit();
  c.tokens = tokens;
  c.until = until;
  return c;
}

describe("throttle config: backend global", () => {
  it("reads the service with its defaults, and a global rule's local share", () => {
    const c = configOf('{"rate_limit_service":{"cluster":"outbound|8081||ratelimit.llm.svc.cluster.local","domain":"llm-mesh"},' +
      '"rules":[{"key":["global"],"backend":"global","limits":{"requests_per_second":5,"tokens_per_minute":2001,"max_in_flight":4}}]}');
    const service = c.rateLimitService!;
    expect(service.cluster).toBe("outbound|8081||ratelimit.llm.svc.cluster.local");
    expect(service.authority).toBe("ratelimit.llm.svc.cluster.local");
    expect(service.domain).toBe("llm-mesh");
    expect(service.timeoutMs).toBe(100);
    expect(service.failureThreshold).toBe(3);
    expect(service.failureBackoffMs).toBe(5000);
    expect(c.asksService).toBe(true);
    const rule = c.rules[0];
    expect(rule.backend).toBe(Backend.Global);
    expect(rule.isGlobal).toBe(true);
    expect(rule.onServiceFailure).toBe(FailureMode.Local);
    expect(rule.localShare).toBe(0.5);
    // Half of each limit, rounded down; max_in_flight is this Envoy's own and stays whole.
    expect(rule.localLimits.requestsPerSecond).toBe(2);
    expect(rule.localLimits.tokensPerMinute).toBe(1000);
    expect(rule.localLimits.maxInFlight).toBe(4);
    // While the service answers, the shared data refuses only on max_in_flight.
    expect(rule.enforced.requestsPerSecond).toBe(0);
    expect(rule.enforced.tokensPerMinute).toBe(0);
    expect(rule.enforced.maxInFlight).toBe(4);
  });

  it("keeps a local rule's limits as they are, and a share never below 1", () => {
    const c = configOf("{" + SERVICE + ',"rules":[{"key":["model"],"limits":{"tokens_per_minute":100}},' +
      '{"key":["global"],"backend":"global","local_share":0.001,"limits":{"requests_per_second":3}}]}');
    expect(c.rules[0].isGlobal).toBe(false);
    expect(c.rules[0].localLimits.tokensPerMinute).toBe(100);
    expect(c.rules[0].enforced.tokensPerMinute).toBe(100);
    expect(c.rules[1].localLimits.requestsPerSecond).toBe(1);
    expect(c.rules[1].localShare).toBe(0.001);
  });

  it("counts nothing locally under on_service_failure allow or deny, and takes an authority as given", () => {
    const rule = globalRule('{"tokens_per_minute":100,"max_in_flight":2}', ',"on_service_failure":"allow"');
    expect(rule.onServiceFailure).toBe(FailureMode.Allow);
    expect(rule.localLimits.tokensPerMinute).toBe(0);
    expect(rule.localLimits.maxInFlight).toBe(2);
    expect(configOf('{"rate_limit_service":{"cluster":"rls","domain":"d"}}').rateLimitService!.authority).toBe("rls");
    expect(configOf('{"rate_limit_service":{"cluster":"rls","authority":"rls.example:8081","domain":"d"}}').rateLimitService!.authority).toBe("rls.example:8081");
    expect(configOf('{"rate_limit_service":{"cluster":"rls","domain":"d"}}').asksService).toBe(false);
  });

  it("names the field of each error", () => {
    expect(errorOf('{"rules":[{"key":["global"],"backend":"global","limits":{"tokens_per_minute":10}}]}'))
      .toBe('rate_limit_service: required: rules[0] has backend "global", counted by the rate limit service this names ({"cluster": ..., "domain": ...})');
    expect(errorOf('{"rate_limit_service":{"domain":"d"}}'))
      .toBe("rate_limit_service.cluster: required: the Envoy cluster of the rate limit service (gRPC over HTTP/2)");
    expect(errorOf('{"rate_limit_service":{"cluster":"","domain":"d"}}')).toBe("rate_limit_service.cluster: must not be empty");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls"}}'))
      .toBe("rate_limit_service.domain: required: the domain the rate limit service's config declares");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls","domain":"a b"}}')).toBe("rate_limit_service.domain: must be 1 to 64 letters, digits, _, - or .");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls","domain":"' + "d".repeat(65) + '"}}')).toBe("rate_limit_service.domain: must be 1 to 64 letters, digits, _, - or .");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls","domain":"d","authority":"a b"}}'))
      .toBe("rate_limit_service.authority: must be a host name, without spaces or control characters");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls","domain":"d","timeout_ms":0}}')).toBe("rate_limit_service.timeout_ms: must be an integer from 1 to 5000, got 0");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls","domain":"d","failure_threshold":0}}'))
      .toBe("rate_limit_service.failure_threshold: must be an integer from 1 to 1000, got 0");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls","domain":"d","failure_backoff_ms":50}}'))
      .toBe("rate_limit_service.failure_backoff_ms: must be an integer from 100 to 600000, got 50");
    expect(errorOf('{"rate_limit_service":{"cluster":"rls","domain":"d","port":1}}'))
      .toBe("rate_limit_service.port: unknown key (allowed: cluster, authority, domain, timeout_ms, failure_threshold, failure_backoff_ms)");
    expect(errorOf('{"rules":[{"key":["global"],"backend":"redis","limits":{"max_in_flight":1}}]}')).toBe('rules[0].backend: must be one of local, global, got "redis"');
    expect(errorOf("{" + SERVICE + ',"rules":[{"key":["global"],"backend":"global","limits":{"max_in_flight":1}}]}'))
      .toBe('rules[0].limits: with backend "global" set at least one of requests_per_second, tokens_per_minute, input_tokens_per_minute, output_tokens_per_minute: ' +
        "max_in_flight is counted by each Envoy, which leaves the service nothing to count");
    expect(errorOf("{" + SERVICE + ',"rules":[{"key":["global"],"backend":"global","limits":{"tokens_per_minute":4294967296}}]}'))
      .toBe('rules[0].limits.tokens_per_minute: with backend "global" at most 4294967295 (the rate limit service counts in 32 bits), got 4294967296');
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"on_service_failure":"deny"}]}'))
      .toBe('rules[0].on_service_failure: only applies with backend "global"');
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"local_share":0.5}]}')).toBe('rules[0].local_share: only applies with backend "global"');
    expect(errorOf("{" + SERVICE + ',"rules":[{"key":["global"],"backend":"global","limits":{"tokens_per_minute":9},"on_service_failure":"allow","local_share":0.5}]}'))
      .toBe('rules[0].local_share: only applies with on_service_failure "local"');
    expect(errorOf("{" + SERVICE + ',"rules":[{"key":["global"],"backend":"global","limits":{"tokens_per_minute":9},"local_share":0}]}'))
      .toBe("rules[0].local_share: must be a number from 0.001 to 1.0, got 0");
    expect(errorOf("{" + SERVICE + ',"rules":[{"key":["global"],"backend":"global","limits":{"tokens_per_minute":9},"on_service_failure":"retry"}]}'))
      .toBe('rules[0].on_service_failure: must be one of local, allow, deny, got "retry"');
  });
});

describe("global budgets: what a request asks for", () => {
  it("hashes the key's parts into 16 hex digits, stable and without _", () => {
    const a = globalKeyHex(["acme"]);
    expect(a.length).toBe(16);
    expect(a).toBe(globalKeyHex(["acme"]));
    expect(a).not.toBe(globalKeyHex(["acmf"]));
    expect(globalKeyHex(["a", "bc"])).not.toBe(globalKeyHex(["ab", "c"]));
    // Pinned: every Envoy, and every build, must name the key's counter alike.
    expect(a).toBe("3a25b6656ba9cfc6");
  });

  it("sends one descriptor per limit, with the rule's own limit and the hits left to ask", () => {
    const rule = globalRule('{"requests_per_second":5,"tokens_per_minute":2000,"output_tokens_per_minute":900}');
    const h = hits(1, 300);
    h.output = 100;
    const ask = askFor(rule, "00ff", h);
    expect(ask.descriptors.length).toBe(3);
    const requests = ask.descriptors[0];
    expect(requests.keys).toStrictEqual(["rule", "key", "limit"]);
    expect(requests.values).toStrictEqual(["g", "00ff", "requests"]);
    expect(requests.requestsPerUnit).toBe(5);
    expect(requests.unit).toBe(RateLimitUnit.Second);
    expect(requests.hits).toBe(1);
    expect(ask.descriptors[1].values[2]).toBe("tokens");
    expect(ask.descriptors[1].unit).toBe(RateLimitUnit.Minute);
    expect(ask.descriptors[1].requestsPerUnit).toBe(2000);
    expect(ask.descriptors[1].hits).toBe(300);
    expect(ask.descriptors[2].values[2]).toBe("output_tokens");
    expect(ask.denies).toStrictEqual([Deny.Requests, Deny.Tokens, Deny.OutputTokens]);
    // Different hits per descriptor: no request-wide figure would be right.
    expect(ask.requestHits).toBe(0);
    // A limit the credit covered is not asked about; one descriptor carries its hits request-wide too.
    const tokensOnly = askFor(rule, "00ff", hits(0, 42));
    expect(tokensOnly.descriptors.length).toBe(1);
    expect(tokensOnly.requestHits).toBe(42);
  });

  it("refuses without asking a request larger than a token limit", () => {
    const rule = globalRule('{"tokens_per_minute":100,"input_tokens_per_minute":50}');
    expect(tooLargeForService(rule, new Reservation(50, 50))).toBe(false);
    expect(tooLargeForService(rule, new Reservation(50, 51))).toBe(true);
    expect(tooLargeForService(rule, new Reservation(51, 0))).toBe(true);
  });
});

/** An answer's statuses come in this ask's order: requests, then tokens. */
function rpsAndTokensAsk(): Ask {
  return askFor(globalRule('{"requests_per_second":5,"tokens_per_minute":2000}'), "k", hits(1, 100));
}

describe("global budgets: reading the answer", () => {
  it("gives an OK's figures as the x-ratelimit-* headers show them, and until when credit may be spent", () => {
    const ask = rpsAndTokensAsk();
    const answer = readAnswer(ask, response(RateLimitCode.Ok, [status(RateLimitCode.Ok, 3, 1), status(RateLimitCode.Ok, 1700, 42)]), T0);
    expect(answer.outcome).toBe(Outcome.Ok);
    expect(answer.check.ok).toBe(true);
    expect(answer.check.remainingRequests).toBe(3);
    expect(answer.check.resetRequestsMs).toBe(1000);
    expect(answer.check.remainingTokens).toBe(1700);
    expect(answer.check.resetTokensMs).toBe(42_000);
    // A second before the reset the service said: credit never reaches into the next window.
    expect(answer.creditUntil).toBe(T0 + 41_000);
  });

  it("gives an OVER_LIMIT's limit and wait, and until when the key is over", () => {
    const ask = rpsAndTokensAsk();
    const answer = readAnswer(ask, response(RateLimitCode.OverLimit, [status(RateLimitCode.Ok, 4, 1), status(RateLimitCode.OverLimit, 0, 30)]), T0);
    expect(answer.outcome).toBe(Outcome.OverLimit);
    expect(answer.check.deny).toBe(Deny.Tokens);
    expect(answer.check.retryAfterMs).toBe(30_000);
    expect(answer.check.remainingTokens).toBe(0);
    expect(answer.check.remainingRequests).toBe(4);
    expect(answer.overUntil).toBe(T0 + 30_000);
    // The longest wait decides when both are over.
    const both = readAnswer(ask, response(RateLimitCode.OverLimit, [status(RateLimitCode.OverLimit, 0, 1), status(RateLimitCode.OverLimit, 0, 30)]), T0);
    expect(both.check.deny).toBe(Deny.Tokens);
  });

  it("takes an answer it cannot use for a failure", () => {
    const ask = rpsAndTokensAsk();
    const broken = new RateLimitResponse();
    broken.valid = false;
    expect(readAnswer(ask, broken, T0).outcome).toBe(Outcome.Failure);
    expect(readAnswer(ask, response(RateLimitCode.Unknown, []), T0).reason).toBe("an answer without a verdict (overall_code UNKNOWN)");
    expect(readAnswer(ask, response(RateLimitCode.Ok, [status(RateLimitCode.Ok, 3, 1)]), T0).reason).toBe("an answer with 1 statuses for 2 descriptors");
    const noLimit = status(RateLimitCode.Ok, 0, -1);
    noLimit.hasLimit = false;
    expect(readAnswer(ask, response(RateLimitCode.Ok, [status(RateLimitCode.Ok, 3, 1), noLimit]), T0).reason)
      .toBe("an answer that applied no limit (does the service's config declare this domain?)");
  });
});

function withCredit(tokens: i64, until: i64): StaticArray<i64> {
  const fields = new StaticArray<i64>(FIELDS);
  fields[F_CREDIT_UNTIL] = until;
  fields[F_CREDIT_TOKENS] = tokens;
  return fields;
}

function tokensRule(): Rule {
  return globalRule('{"tokens_per_minute":2000}');
}

describe("global budgets: the key's credit and over-limit memory", () => {
  it("spends credit first and asks for the rest", () => {
    const fields = withCredit(30, T0 + 10_000);
    const step = planAsk(fields, tokensRule(), new Reservation(20, 50), T0);
    expect(step.cached).toBeNull();
    expect(step.taken.tokens).toBe(30);
    expect(step.taken.until).toBe(T0 + 10_000);
    expect(step.hits.tokens).toBe(40);
    expect(step.hits.requests).toBe(0);
    expect(fields[F_CREDIT_TOKENS]).toBe(0);
  });

  it("goes on without asking when the credit covers the request, even while the key is over", () => {
    const fields = withCredit(100, T0 + 10_000);
    rememberOverLimit(fields, Deny.Tokens, T0 + 5000);
    const step = planAsk(fields, tokensRule(), new Reservation(20, 50), T0);
    expect(step.cached).toBeNull();
    expect(step.hits.empty).toBe(true);
    expect(fields[F_CREDIT_TOKENS]).toBe(30);
  });

  it("refuses from memory while the key is over, taking nothing, and asks again once its window reset", () => {
    const fields = withCredit(10, T0 + 10_000);
    rememberOverLimit(fields, Deny.Tokens, T0 + 5000);
    const step = planAsk(fields, tokensRule(), new Reservation(20, 50), T0);
    expect(step.cached!.deny).toBe(Deny.Tokens);
    expect(step.cached!.retryAfterMs).toBe(5000);
    expect(step.taken.empty).toBe(true);
    expect(fields[F_CREDIT_TOKENS]).toBe(10);
    expect(planAsk(fields, tokensRule(), new Reservation(20, 50), T0 + 5000).cached).toBeNull();
    // A shorter memory does not cut a longer one short.
    rememberOverLimit(fields, Deny.Requests, T0 + 1000);
    expect(fields[F_OVER_UNTIL]).toBe(T0 + 5000);
    expect(fields[F_OVER_DENY]).toBe(<i64>Deny.Tokens);
  });

  it("drops credit whose window ended before spending any", () => {
    const fields = withCredit(500, T0);
    const step = planAsk(fields, tokensRule(), new Reservation(20, 50), T0);
    expect(step.taken.tokens).toBe(0);
    expect(step.hits.tokens).toBe(70);
    expect(fields[F_CREDIT_TOKENS]).toBe(0);
  });

  it("adds credit of the same window, replaces an older window's, and keeps none of a window that ended", () => {
    const fields = withCredit(10, T0 + 30_000);
    // Each answer rounds its reset to a second: ends a second apart are one window, the earlier one stands.
    expect(addCredit(fields, credit(5, T0 + 29_000), T0)).toBe(5);
    expect(fields[F_CREDIT_TOKENS]).toBe(15);
    expect(fields[F_CREDIT_UNTIL]).toBe(T0 + 29_000);
    expect(addCredit(fields, credit(7, T0 + 89_000), T0)).toBe(7);
    expect(fields[F_CREDIT_TOKENS]).toBe(7);
    expect(fields[F_CREDIT_UNTIL]).toBe(T0 + 89_000);
    expect(addCredit(fields, credit(9, T0 + 29_000), T0)).toBe(0);
    expect(addCredit(fields, credit(9, T0), T0)).toBe(0);
    expect(fields[F_CREDIT_TOKENS]).toBe(7);
  });

  it("settles a counted request: over-use to send, under-use to keep, per token limit", () => {
    const io = globalRule('{"tokens_per_minute":2000,"input_tokens_per_minute":500}');
    const reserved = new Reservation(40, 100);
    const used = new Reservation(45, 20);
    const over = overUse(io, reserved, used);
    expect(over.tokens).toBe(0);
    expect(over.input).toBe(5);
    expect(over.output).toBe(0);
    const under = underUse(io, reserved, used, T0);
    expect(under.tokens).toBe(75);
    expect(under.input).toBe(0);
    expect(under.output).toBe(0);
    expect(under.until).toBe(T0);
    // What a request took from the credit and what it asked for go back together.
    const back = joinCredit(credit(30, T0 + 9000), hitsAsCredit(hits(1, 40), T0 + 8000));
    expect(back.tokens).toBe(70);
    expect(back.until).toBe(T0 + 8000);
    const fields = new StaticArray<i64>(FIELDS);
    expect(addCredit(fields, under, T0 - 1)).toBe(75);
    expect(fields[F_CREDIT_INPUT]).toBe(0);
  });
});

describe("global budgets: the circuit", () => {
  it("opens after failure_threshold consecutive failures, lets one probe through after the backoff, closes on an answer", () => {
    const fields = new StaticArray<i64>(CIRCUIT_FIELDS);
    expect(gate(fields, T0, 300)).toBe(Gate.Ask);
    expect(noteFailure(fields, T0, 3, 5000)).toBe(false);
    expect(noteFailure(fields, T0, 3, 5000)).toBe(false);
    expect(noteSuccess(fields)).toBe(false);
    expect(fields[C_FAILURES]).toBe(0);
    expect(noteFailure(fields, T0, 3, 5000)).toBe(false);
    expect(noteFailure(fields, T0, 3, 5000)).toBe(false);
    expect(noteFailure(fields, T0, 3, 5000)).toBe(true);
    expect(fields[C_OPEN_UNTIL]).toBe(T0 + 5000);
    expect(circuitWaitMs(fields, T0 + 1000)).toBe(4000);
    expect(gate(fields, T0 + 4999, 300)).toBe(Gate.Skip);
    // Calls that were under way when it opened do not push the probe back.
    expect(noteFailure(fields, T0 + 100, 3, 5000)).toBe(false);
    expect(fields[C_OPEN_UNTIL]).toBe(T0 + 5000);
    expect(gate(fields, T0 + 5000, 300)).toBe(Gate.Probe);
    expect(gate(fields, T0 + 5001, 300)).toBe(Gate.Skip);
    // A failed probe waits another backoff.
    expect(noteFailure(fields, T0 + 5100, 3, 5000)).toBe(false);
    expect(fields[C_OPEN_UNTIL]).toBe(T0 + 10_100);
    expect(gate(fields, T0 + 10_100, 300)).toBe(Gate.Probe);
    expect(noteSuccess(fields)).toBe(true);
    expect(gate(fields, T0 + 10_200, 300)).toBe(Gate.Ask);
    expect(circuitWaitMs(fields, T0 + 10_200)).toBe(0);
  });

  it("lets another probe through when one never came back", () => {
    const fields = new StaticArray<i64>(CIRCUIT_FIELDS);
    noteFailure(fields, T0, 1, 1000);
    expect(gate(fields, T0 + 1000, 300)).toBe(Gate.Probe);
    expect(gate(fields, T0 + 1299, 300)).toBe(Gate.Skip);
    expect(gate(fields, T0 + 1300, 300)).toBe(Gate.Probe);
  });
});

describe("global budgets: on_service_failure deny", () => {
  it("answers 503 in the API's error shape, whatever the rule's action", () => {
    const rule = configOf("{" + SERVICE + ',"rules":[{"name":"q","key":["global"],"backend":"global","on_service_failure":"deny","action":"queue","limits":{"tokens_per_minute":9}}]}').rules[0];
    const answer = new RuleAnswer(rule, new Reservation(1, 1));
    answer.check = new Check();
    answer.check.deny = Deny.Unavailable;
    answer.check.retryAfterMs = 1000;
    const decision = decide(answer, false, false, T0);
    expect(decision.choice).toBe(Choice.Reject);
    expect(decision.error!.status).toBe(503);
    expect(decision.error!.code).toBe("rate_limit_service_unavailable");
    expect(decision.error!.message).toBe("The rate limit service did not answer (llm-throttle rule `q`, which refuses requests while it cannot count them). Please try again in 1s.");
    expect(decision.retryAfterSeconds).toBe(1);
  });
});
