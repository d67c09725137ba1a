import { Backend, FailureMode, parseThrottleConfig, ThrottleConfig } from "../throttle/config";

const SERVICE = '"rate_limit_service":{"cluster":"ratelimit","domain":"llm-mesh"}';

function errorOf(text: string): string {
  return parseThrottleConfig(text).error;
}

function configOf(text: string): ThrottleConfig {
  const result = parseThrottleConfig(text);
  expect(result.error).toBe("");
  return result.config!;
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
    const rule = configOf("{" + SERVICE + ',"rules":[{"key":["global"],"backend":"global","on_service_failure":"allow","limits":{"tokens_per_minute":100,"max_in_flight":2}}]}').rules[0];
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
