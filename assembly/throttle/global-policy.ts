// Cluster-wide budgets (backend "global"): the pure part of asking the rate limit service. What a
// request asks for (descriptors, hits after the key's credit), what the answer means (the same
// Check the shared-data limiter gives, so decide() and the x-ratelimit-* headers stay as they are),
// the credit and the over-limit memory a key's record keeps (policy.ts F_OVER_*, F_CREDIT_*), what
// a settled request sends or keeps, and the circuit that stops asking a service that keeps failing.
//
// The service (envoyproxy/ratelimit, see tooling/ratelimit.ts) adds each descriptor's hits to a
// counter of a fixed window and judges the new total: it never lets two proxies both fit into the
// last units, it counts a refused request's hits too, and its counters never go down. So a proxy
// reserves before forwarding, keeps what a request did not use as credit that its next requests of
// the key spend first, and, once told "over the limit", answers the key itself until the window
// resets instead of asking (and spending) again.
import { RateLimitCode, RateLimitDescriptor, RateLimitResponse, RateLimitUnit } from "../ratelimit/rls";
import { hex64, StableHasher } from "../text/stable-hash";
import { Rule } from "./config";
import {
  Check, Deny, F_CREDIT_INPUT, F_CREDIT_OUTPUT, F_CREDIT_TOKENS, F_CREDIT_UNTIL, F_OVER_DENY, F_OVER_UNTIL, Reservation,
} from "./policy";

/** Two window ends this close apart are the same window: each answer rounds the reset to whole seconds. */
export const SAME_WINDOW_MS: i64 = 1500;

/** What a request adds to each of its rule's counters in the service. */
export class Hits {
  requests: i64 = 0;
  tokens: i64 = 0;
  input: i64 = 0;
  output: i64 = 0;

  get empty(): bool {
    return this.requests <= 0 && this.tokens <= 0 && this.input <= 0 && this.output <= 0;
  }
}

/** Tokens the service counted for a key that no request used: spent before asking for more. */
export class Credit {
  tokens: i64 = 0;
  input: i64 = 0;
  output: i64 = 0;
  /** Host ms until which it may be spent: the end of the service's window it was counted in. */
  until: i64 = 0;

  get empty(): bool {
    return this.tokens <= 0 && this.input <= 0 && this.output <= 0;
  }
}

// ---- the key and the descriptors ----

/**
 * The key's value in the service: a stable hash (the same in every Envoy and build) of its parts,
 * as 16 hex digits. A hash keeps header values (API keys) out of Redis and the key's length
 * bounded, and holds no "_", which the reference service joins entries with unescaped.
 */
export function globalKeyHex(parts: string[]): string {
  const hasher = new StableHasher();
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) hasher.addByte(0x1f);
    hasher.addString(unchecked(parts[i]));
  }
  return hex64(hasher.digest());
}

/** The descriptor values naming each counter of a rule, and the Deny each stands for. */
export const LIMIT_NAMES: string[] = ["requests", "tokens", "input_tokens", "output_tokens"];
const LIMIT_DENIES: Deny[] = [Deny.Requests, Deny.Tokens, Deny.InputTokens, Deny.OutputTokens];

/** One ShouldRateLimit request's descriptors, and which limit each is, in the order the answer's statuses come. */
export class Ask {
  descriptors: RateLimitDescriptor[] = [];
  denies: Deny[] = [];
  /** The request-wide hits_addend: the one figure when every descriptor adds the same, else 0. */
  requestHits: u32 = 0;

  get empty(): bool {
    return this.descriptors.length == 0;
  }
}

/**
 * A descriptor per limit the rule sets and `hits` adds to: [("rule", name), ("key", keyHex),
 * ("limit", which)], with the rule's own limit (requests per SECOND, tokens per MINUTE), so that
 * the service's config needs nothing but the domain. A limit with no hits is left out: asking
 * with 0 would refuse a request whose share the credit covered, on a counter already over.
 */
export function askFor(rule: Rule, keyHex: string, hits: Hits): Ask {
  const ask = new Ask();
  const l = rule.limits;
  addDescriptor(ask, rule, keyHex, 0, l.requestsPerSecond, RateLimitUnit.Second, hits.requests);
  addDescriptor(ask, rule, keyHex, 1, l.tokensPerMinute, RateLimitUnit.Minute, hits.tokens);
  addDescriptor(ask, rule, keyHex, 2, l.inputTokensPerMinute, RateLimitUnit.Minute, hits.input);
  addDescriptor(ask, rule, keyHex, 3, l.outputTokensPerMinute, RateLimitUnit.Minute, hits.output);
  // Services that read only the request-wide figure (Limitador) count right when all agree.
  let same: i64 = -1;
  for (let i = 0; i < ask.descriptors.length; i++) {
    const h = <i64>unchecked(ask.descriptors[i]).hits;
    same = same < 0 || same == h ? h : 0;
  }
  ask.requestHits = same > 0 && same <= <i64>u32.MAX_VALUE ? <u32>same : 0;
  return ask;
}

function addDescriptor(ask: Ask, rule: Rule, keyHex: string, which: i32, limit: i64, unit: RateLimitUnit, hits: i64): void {
  if (limit <= 0 || hits <= 0) return;
  ask.descriptors.push(new RateLimitDescriptor(<u32>limit, unit, <u64>hits)
    .entry("rule", rule.name).entry("key", keyHex).entry("limit", unchecked(LIMIT_NAMES[which])));
  ask.denies.push(unchecked(LIMIT_DENIES[which]));
}

/** Whether the request alone needs more than a token limit of the rule: no window will ever fit it. */
export function tooLargeForService(rule: Rule, reservation: Reservation): bool {
  const l = rule.limits;
  return (l.tokensPerMinute > 0 && reservation.total > l.tokensPerMinute) ||
    (l.inputTokensPerMinute > 0 && reservation.input > l.inputTokensPerMinute) ||
    (l.outputTokensPerMinute > 0 && reservation.output > l.outputTokensPerMinute);
}

// ---- the answer ----

export enum Outcome {
  Ok = 0,
  OverLimit,
  /** No usable verdict: the call failed, or the answer could not be read or applied no limit. */
  Failure,
}

export const OUTCOME_NAMES: string[] = ["ok", "over_limit", "failure"];

export class GlobalAnswer {
  outcome: Outcome = Outcome.Failure;
  /** Ok: the x-ratelimit-* figures; OverLimit: the Deny and the wait, as the shared-data limiter gives them. */
  check: Check = new Check();
  /** OverLimit: until when the key is over (host ms). */
  overUntil: i64 = 0;
  /** Ok: until when credit from this window may be spent (host ms); 0 when no token limit answered. */
  creditUntil: i64 = 0;
  /** Failure: why, for the log line when the service is found unavailable. */
  reason: string = "";
}

export function failedAnswer(reason: string): GlobalAnswer {
  const answer = new GlobalAnswer();
  answer.reason = reason;
  return answer;
}

/**
 * What the service's answer to `ask` means at `now` (host ms). Its resets are whole seconds of
 * the service's clock: the key is taken to be over until now + reset (up to a second late, never
 * early: an ask that comes early is refused and counted again), and credit to be spendable until a
 * second before (never into the next window, whose counter does not hold it).
 */
export function readAnswer(ask: Ask, response: RateLimitResponse, now: i64): GlobalAnswer {
  if (!response.valid) return failedAnswer("an answer that is not a RateLimitResponse");
  if (response.overallCode == RateLimitCode.Unknown) return failedAnswer("an answer without a verdict (overall_code UNKNOWN)");
  if (response.statuses.length != ask.denies.length) {
    return failedAnswer("an answer with " + response.statuses.length.toString() + " statuses for " + ask.denies.length.toString() + " descriptors");
  }
  const answer = new GlobalAnswer();
  const check = answer.check;
  let longestOver: i64 = -1;
  for (let i = 0; i < ask.denies.length; i++) {
    const status = unchecked(response.statuses[i]);
    const deny = unchecked(ask.denies[i]);
    // The reference service answers a domain its config lacks with OK and no limit, counting nothing.
    if (!status.hasLimit) return failedAnswer("an answer that applied no limit (does the service's config declare this domain?)");
    const resetMs = max<i64>(status.resetSeconds, 1) * 1000;
    const over = status.code == RateLimitCode.OverLimit;
    const remaining: i64 = over ? 0 : <i64>status.limitRemaining;
    if (deny == Deny.Requests) {
      check.remainingRequests = remaining;
      check.resetRequestsMs = resetMs;
    } else {
      if (deny == Deny.Tokens) {
        check.remainingTokens = remaining;
        check.resetTokensMs = resetMs;
      }
      const until = now + resetMs - 1000;
      if (!over && (answer.creditUntil == 0 || until < answer.creditUntil)) answer.creditUntil = until;
    }
    if (over && resetMs > longestOver) {
      longestOver = resetMs;
      check.deny = deny;
      check.retryAfterMs = resetMs;
    }
  }
  if (longestOver >= 0) {
    answer.outcome = Outcome.OverLimit;
    answer.overUntil = now + longestOver;
    answer.creditUntil = 0;
  } else if (response.overallCode == RateLimitCode.Ok) {
    answer.outcome = Outcome.Ok;
  } else {
    return failedAnswer("an answer OVER_LIMIT overall with no descriptor over its limit");
  }
  return answer;
}

// ---- the key's record: the over-limit memory and the credit ----

/** The request's share of the counters: one request, and its reservation per token limit. */
function need(rule: Rule, reservation: Reservation): Hits {
  const l = rule.limits;
  const hits = new Hits();
  hits.requests = l.requestsPerSecond > 0 ? 1 : 0;
  hits.tokens = l.tokensPerMinute > 0 ? reservation.total : 0;
  hits.input = l.inputTokensPerMinute > 0 ? reservation.input : 0;
  hits.output = l.outputTokensPerMinute > 0 ? reservation.output : 0;
  return hits;
}

/** What a request does before asking, given its key's record. */
export class GlobalStep {
  /** The service said the key is over until later than now, and the credit does not cover the request: refused with this. */
  cached: Check | null = null;
  /** Credit taken from the record for this request. */
  taken: Credit = new Credit();
  /** What is left to ask for; empty: the credit covered the request, which goes on without a call. */
  hits: Hits = new Hits();
}

/**
 * Before asking: the key's credit covers what it can of the request (taken from the record), and
 * what is left is asked for, unless the service said the key is over the limit until later, when
 * the request is refused here with the Deny and the wait it said (nothing is taken then). A
 * request the credit covers whole goes on even then: the credit is budget the service counted.
 */
export function planAsk(fields: StaticArray<i64>, rule: Rule, reservation: Reservation, now: i64): GlobalStep {
  const step = new GlobalStep();
  const until = unchecked(fields[F_CREDIT_UNTIL]);
  if (until <= now) dropCredit(fields);
  const wanted = need(rule, reservation);
  const taken = step.taken;
  taken.until = until;
  taken.tokens = min<i64>(wanted.tokens, unchecked(fields[F_CREDIT_TOKENS]));
  taken.input = min<i64>(wanted.input, unchecked(fields[F_CREDIT_INPUT]));
  taken.output = min<i64>(wanted.output, unchecked(fields[F_CREDIT_OUTPUT]));
  const hits = step.hits;
  hits.requests = wanted.requests;
  hits.tokens = wanted.tokens - taken.tokens;
  hits.input = wanted.input - taken.input;
  hits.output = wanted.output - taken.output;
  const overUntil = unchecked(fields[F_OVER_UNTIL]);
  if (!hits.empty && overUntil > now) {
    const check = new Check();
    check.deny = <Deny>unchecked(fields[F_OVER_DENY]);
    check.retryAfterMs = overUntil - now;
    step.cached = check;
    step.taken = new Credit();
    step.hits = new Hits();
    return step;
  }
  unchecked((fields[F_CREDIT_TOKENS] = fields[F_CREDIT_TOKENS] - taken.tokens));
  unchecked((fields[F_CREDIT_INPUT] = fields[F_CREDIT_INPUT] - taken.input));
  unchecked((fields[F_CREDIT_OUTPUT] = fields[F_CREDIT_OUTPUT] - taken.output));
  return step;
}

function dropCredit(fields: StaticArray<i64>): void {
  unchecked((fields[F_CREDIT_UNTIL] = 0));
  unchecked((fields[F_CREDIT_TOKENS] = 0));
  unchecked((fields[F_CREDIT_INPUT] = 0));
  unchecked((fields[F_CREDIT_OUTPUT] = 0));
}

/**
 * Adds credit counted in the window ending at `credit.until`: to the record's credit of the same
 * window, in place of an older window's, and not at all when that window is over (its counter is
 * no longer the one the service asks) or older than the record's. Returns the tokens added.
 */
export function addCredit(fields: StaticArray<i64>, credit: Credit, now: i64): i64 {
  if (credit.empty || credit.until <= now) return 0;
  const until = unchecked(fields[F_CREDIT_UNTIL]);
  if (until > now && abs<i64>(until - credit.until) <= SAME_WINDOW_MS) {
    unchecked((fields[F_CREDIT_UNTIL] = min<i64>(until, credit.until)));
  } else if (until <= now || credit.until > until) {
    dropCredit(fields);
    unchecked((fields[F_CREDIT_UNTIL] = credit.until));
  } else {
    return 0;
  }
  unchecked((fields[F_CREDIT_TOKENS] = fields[F_CREDIT_TOKENS] + max<i64>(credit.tokens, 0)));
  unchecked((fields[F_CREDIT_INPUT] = fields[F_CREDIT_INPUT] + max<i64>(credit.input, 0)));
  unchecked((fields[F_CREDIT_OUTPUT] = fields[F_CREDIT_OUTPUT] + max<i64>(credit.output, 0)));
  return max<i64>(credit.tokens, 0);
}

/** Remembers that the service said the key is over until `until`, for `deny`; a later end already known stands. */
export function rememberOverLimit(fields: StaticArray<i64>, deny: Deny, until: i64): void {
  if (until <= unchecked(fields[F_OVER_UNTIL])) return;
  unchecked((fields[F_OVER_UNTIL] = until));
  unchecked((fields[F_OVER_DENY] = <i64>deny));
}

// ---- settling ----

/** What a counted request used beyond its reservation, per token limit: sent to the service after the answer. */
export function overUse(rule: Rule, reserved: Reservation, used: Reservation): Hits {
  const l = rule.limits;
  const hits = new Hits();
  if (l.tokensPerMinute > 0) hits.tokens = max<i64>(0, used.total - reserved.total);
  if (l.inputTokensPerMinute > 0) hits.input = max<i64>(0, used.input - reserved.input);
  if (l.outputTokensPerMinute > 0) hits.output = max<i64>(0, used.output - reserved.output);
  return hits;
}

/** What a counted request reserved and did not use, per token limit: credit of the window that ends at `until`. */
export function underUse(rule: Rule, reserved: Reservation, used: Reservation, until: i64): Credit {
  const l = rule.limits;
  const credit = new Credit();
  credit.until = until;
  if (l.tokensPerMinute > 0) credit.tokens = max<i64>(0, reserved.total - used.total);
  if (l.inputTokensPerMinute > 0) credit.input = max<i64>(0, reserved.input - used.input);
  if (l.outputTokensPerMinute > 0) credit.output = max<i64>(0, reserved.output - used.output);
  return credit;
}

/** Hits the service counted for a request that then used none of them: credit, like an unused reservation. */
export function hitsAsCredit(hits: Hits, until: i64): Credit {
  const credit = new Credit();
  credit.until = until;
  credit.tokens = hits.tokens;
  credit.input = hits.input;
  credit.output = hits.output;
  return credit;
}

/** Two credits as one (the part taken from the record and the part asked for); the earlier end stands. */
export function joinCredit(a: Credit, b: Credit): Credit {
  const credit = new Credit();
  credit.until = a.empty ? b.until : b.empty ? a.until : min<i64>(a.until, b.until);
  credit.tokens = a.tokens + b.tokens;
  credit.input = a.input + b.input;
  credit.output = a.output + b.output;
  return credit;
}

// ---- the circuit: stop asking a service that keeps failing ----
// One record per service in shared data, for every worker and rule of the Envoy: consecutive
// failures; once failure_threshold are reached, nobody asks until failure_backoff_ms have passed,
// and then a single call (the probe) asks while the others still do without.

export const C_FAILURES: i32 = 0;
/** 0: closed (asking); otherwise open, nobody asks before this host ms. */
export const C_OPEN_UNTIL: i32 = 1;
/** Open and past C_OPEN_UNTIL: a probe is under way until this host ms. */
export const C_PROBE_UNTIL: i32 = 2;
export const CIRCUIT_FIELDS: i32 = 3;

export enum Gate {
  /** Closed: ask. */
  Ask = 0,
  /** This call is the probe of an open circuit: ask, the record now says a probe is under way. */
  Probe,
  /** Open: do without the service. */
  Skip,
}

/** Whether a call may be made at `now`; a Probe changed the record (it must be written for the probe to be this caller's). */
export function gate(fields: StaticArray<i64>, now: i64, probeMs: i64): Gate {
  const openUntil = unchecked(fields[C_OPEN_UNTIL]);
  if (openUntil == 0) return Gate.Ask;
  if (now < openUntil || now < unchecked(fields[C_PROBE_UNTIL])) return Gate.Skip;
  unchecked((fields[C_PROBE_UNTIL] = now + probeMs));
  return Gate.Probe;
}

/** A call got an answer: the circuit closes. True when this closed an open one (the service is back). */
export function noteSuccess(fields: StaticArray<i64>): bool {
  const wasOpen = unchecked(fields[C_OPEN_UNTIL]) != 0;
  unchecked((fields[C_FAILURES] = 0));
  unchecked((fields[C_OPEN_UNTIL] = 0));
  unchecked((fields[C_PROBE_UNTIL] = 0));
  return wasOpen;
}

/**
 * A call failed. True when this opened the circuit (the service is found unavailable); an open
 * circuit's failed probe keeps it open for another backoff.
 */
export function noteFailure(fields: StaticArray<i64>, now: i64, threshold: i64, backoffMs: i64): bool {
  const failures = unchecked(fields[C_FAILURES]) + 1;
  unchecked((fields[C_FAILURES] = failures));
  const open = unchecked(fields[C_OPEN_UNTIL]) != 0;
  if (open) {
    if (now >= unchecked(fields[C_OPEN_UNTIL])) {
      unchecked((fields[C_OPEN_UNTIL] = now + backoffMs));
      unchecked((fields[C_PROBE_UNTIL] = 0));
    }
    return false;
  }
  if (failures < threshold) return false;
  unchecked((fields[C_OPEN_UNTIL] = now + backoffMs));
  unchecked((fields[C_PROBE_UNTIL] = 0));
  return true;
}

/** Whether the circuit says nothing worth writing: closed with no failure counted (most answers change nothing). */
export function circuitClear(fields: StaticArray<i64>): bool {
  return unchecked(fields[C_FAILURES]) == 0 && unchecked(fields[C_OPEN_UNTIL]) == 0;
}

/** While open: how long until the next probe may ask (for Retry-After of a request refused meanwhile). */
export function circuitWaitMs(fields: StaticArray<i64>, now: i64): i64 {
  const openUntil = unchecked(fields[C_OPEN_UNTIL]);
  return openUntil > now ? openUntil - now : 0;
}
