// The throttle's side of the rate limit service (backend "global"): one per root. It sends
// ShouldRateLimit calls (always as the root, so that every answer reaches it, even one for a request
// that has left meanwhile), reads the answers with global-policy.ts, keeps the circuit (store.ts)
// and says once per Envoy when the service becomes unavailable and when it answers again. Which
// request an answer is for, and what follows from it, is filter.ts's business.
import { HostContext } from "../host/contexts";
import { defineCounter, incrementMetric, Logger, utf8 } from "../host/calls";
import { decodeRateLimitResponse, encodeGrpcService, encodeRateLimitRequest, RATE_LIMIT_SERVICE, SHOULD_RATE_LIMIT } from "../ratelimit/rls";
import { LABEL_FAILURE_MODE, LABEL_OUTCOME, LABEL_RULE, TaggedName } from "../telemetry/metric-names";
import { RateLimitService, Rule } from "./config";
import { Ask, failedAnswer, Gate, GlobalAnswer, Outcome, OUTCOME_NAMES, readAnswer } from "./global-policy";
import { circuitGate, circuitKey, circuitOutcome, circuitWait } from "./store";

/** Counter: calls asking for a reservation, by llm_rule and llm_outcome (ok, over_limit, failure). */
export const METRIC_GLOBAL_CALLS = "llm_throttle_global_calls_total";
/** Counter: requests decided without the service (it failed, or its circuit is open), by llm_rule and llm_failure_mode. */
export const METRIC_GLOBAL_FALLBACKS = "llm_throttle_global_fallbacks_total";
/** Counter: calls sending what requests used beyond their reservation, by llm_rule. */
export const METRIC_GLOBAL_SETTLE_CALLS = "llm_throttle_global_settle_calls_total";
/** Counter: such over-use that did not reach the service (circuit open, call refused or failed), by llm_rule. */
export const METRIC_GLOBAL_SETTLE_DROPPED = "llm_throttle_global_settle_dropped_total";
/** Counter: requests refused from what the service said earlier (the key is over until its window resets), by llm_rule. */
export const METRIC_GLOBAL_CACHED_DENIALS = "llm_throttle_global_cached_denials_total";
/** Counter, tokens: what reservations the service refused added to its counter anyway, by llm_rule. */
export const METRIC_GLOBAL_REFUSED_TOKENS = "llm_throttle_global_refused_tokens_total";
/** Counter, tokens: counted in the service and not used, kept as this Envoy's credit for the key's window, by llm_rule. */
export const METRIC_GLOBAL_CREDITED_TOKENS = "llm_throttle_global_credited_tokens_total";
/** Counter, tokens: credit that reservations spent instead of asking, by llm_rule. */
export const METRIC_GLOBAL_CREDIT_SPENT_TOKENS = "llm_throttle_global_credit_spent_tokens_total";

export const FAILURE_MODE_NAMES: string[] = ["local", "allow", "deny"];

const SERVICE_NAME = utf8(RATE_LIMIT_SERVICE);
const METHOD = utf8(SHOULD_RATE_LIMIT);
/**
 * How long after its timeout a call with no answer at all is taken to have failed. Envoy closes a
 * call at its timeout; this only keeps a request from waiting for ever should a close never come.
 */
export const ANSWER_GRACE_MS: i64 = 200;

/** A global rule's metrics, in Envoy's stats as wasmcustom.<name>llm_rule=.=<rule>;.;... */
export class GlobalMetrics {
  calls: i32[] = [];
  fallbacks: i32[] = [];
  settleCalls: i32;
  settleDropped: i32;
  cachedDenials: i32;
  refusedTokens: i32;
  creditedTokens: i32;
  creditSpentTokens: i32;

  constructor(rule: Rule) {
    for (let i = 0; i < OUTCOME_NAMES.length; i++) {
      this.calls.push(defineCounter(new TaggedName(METRIC_GLOBAL_CALLS).tag(LABEL_RULE, rule.name).tag(LABEL_OUTCOME, unchecked(OUTCOME_NAMES[i])).toString()));
    }
    for (let i = 0; i < FAILURE_MODE_NAMES.length; i++) {
      this.fallbacks.push(defineCounter(new TaggedName(METRIC_GLOBAL_FALLBACKS).tag(LABEL_RULE, rule.name).tag(LABEL_FAILURE_MODE, unchecked(FAILURE_MODE_NAMES[i])).toString()));
    }
    this.settleCalls = defineCounter(perRule(METRIC_GLOBAL_SETTLE_CALLS, rule));
    this.settleDropped = defineCounter(perRule(METRIC_GLOBAL_SETTLE_DROPPED, rule));
    this.cachedDenials = defineCounter(perRule(METRIC_GLOBAL_CACHED_DENIALS, rule));
    this.refusedTokens = defineCounter(perRule(METRIC_GLOBAL_REFUSED_TOKENS, rule));
    this.creditedTokens = defineCounter(perRule(METRIC_GLOBAL_CREDITED_TOKENS, rule));
    this.creditSpentTokens = defineCounter(perRule(METRIC_GLOBAL_CREDIT_SPENT_TOKENS, rule));
  }

  call(outcome: Outcome): void {
    incrementMetric(unchecked(this.calls[<i32>outcome]), 1);
  }

  fallback(rule: Rule): void {
    incrementMetric(unchecked(this.fallbacks[<i32>rule.onServiceFailure]), 1);
  }
}

function perRule(name: string, rule: Rule): string {
  return new TaggedName(name).tag(LABEL_RULE, rule.name).toString();
}

export class GlobalClient {
  private service: ArrayBuffer;
  private circuit: string;
  private unreachableWarned: bool = false;

  constructor(public config: RateLimitService, private logger: Logger) {
    this.service = encodeGrpcService(config.cluster, config.authority);
    this.circuit = circuitKey(config.cluster);
  }

  /** Whether a call may be made now: not while the circuit is open, but for the one probe once its backoff is over. */
  gate(now: i64): Gate {
    return circuitGate(this.circuit, now, this.config.timeoutMs + ANSWER_GRACE_MS);
  }

  /** How long a request refused for want of the service (on_service_failure deny) should wait: until the next probe, at least a second. */
  retryAfterMs(now: i64): i64 {
    return max<i64>(1000, circuitWait(this.circuit, now));
  }

  /** Sends `ask` as `caller`: the call's token, or a negative result when Envoy refused to start it (counted as a failed call). */
  send(caller: HostContext, ask: Ask, now: i64): i64 {
    const message = encodeRateLimitRequest(this.config.domain, ask.descriptors, ask.requestHits);
    const token = caller.grpcCall(this.service, SERVICE_NAME, METHOD, message, <u32>this.config.timeoutMs);
    if (token < 0) {
      const reason = "Envoy refused to start the call (result " + token.toString() + (token == -10 ? ": is there a cluster named \"" + this.config.cluster + "\"?)" : ")");
      if (!this.unreachableWarned) {
        // Said once per worker: a missing cluster fails every call the same way, and the circuit only says so when it opens.
        this.unreachableWarned = true;
        this.logger.warn(caller.contextId, "rate limit service: " + reason);
      }
      this.note(false, reason, now, caller.contextId);
    }
    return token;
  }

  /** What the service's answer to `ask` says, counted for the circuit. */
  received(ask: Ask, bytes: Uint8Array, now: i64, contextId: u32): GlobalAnswer {
    const answer = readAnswer(ask, decodeRateLimitResponse(bytes), now);
    this.note(answer.outcome != Outcome.Failure, answer.reason, now, contextId);
    return answer;
  }

  /** A call that ended without an answer, counted for the circuit. */
  closed(status: u32, message: string, now: i64, contextId: u32): GlobalAnswer {
    const answer = failedAnswer("gRPC status " + status.toString() + (message.length > 0 ? " (" + message + ")" : ""));
    this.note(false, answer.reason, now, contextId);
    return answer;
  }

  /** A call with no answer past its timeout (filter.ts gives up on it), counted for the circuit. */
  unanswered(now: i64, contextId: u32): GlobalAnswer {
    const answer = failedAnswer("no answer within timeout_ms (" + this.config.timeoutMs.toString() + " ms)");
    this.note(false, answer.reason, now, contextId);
    return answer;
  }

  private note(success: bool, reason: string, now: i64, contextId: u32): void {
    const c = this.config;
    if (!circuitOutcome(this.circuit, success, now, c.failureThreshold, c.failureBackoffMs)) return;
    if (success) {
      this.logger.info(contextId, "rate limit service " + c.cluster + " answers again: rules with backend global count in it again");
    } else {
      this.logger.warn(contextId, "rate limit service " + c.cluster + " unavailable after " + c.failureThreshold.toString() + " failed calls (last: " + reason +
        "): rules with backend global apply their on_service_failure, and ask again in " + c.failureBackoffMs.toString() + " ms");
    }
  }
}
