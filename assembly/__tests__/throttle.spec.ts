import { KeyHash } from "../text/key-hash";
import { ApiShape } from "../llm/request";
import { Action, KeyKind, Limits, Rule } from "../throttle/config";
import { configOf, errorOf } from "./throttle-configs";
import {
  addHeld, BUCKET_MS, BUCKETS, Check, Deny, evaluate, F_HOLD_EPOCH, F_REQUEST_CREDIT, F_TOTAL, F_WAITING, FIELDS, formatDuration, Hold,
  HOLD_LEASE_MS, HOLD_STEP_MS, homeSlot, IDLE_MS, inFlight, initRecord, isIdle, refresh, refreshHolds, refusalMessage,
  renewHold, Reservation, reservationFor, retryAfterSeconds, settle, take, tickPeriodMs, untake, waiting, windowUsed,
  waitOrder, takeTurn, endTurn, Turn, RECORD_LAYOUT, Choice, decide, RuleAnswer, waitedTooLong,
} from "../throttle/policy";


function limits(rps: i64, tpm: i64, inFlight: i64): Limits {
  const l = new Limits();
  l.requestsPerSecond = rps;
  l.tokensPerMinute = tpm;
  l.maxInFlight = inFlight;
  return l;
}

// A time on a bucket boundary, far from zero like the real clock.
const T0: i64 = 1_700_000_000_000;

function record(l: Limits, now: i64): StaticArray<i64> {
  const fields = new StaticArray<i64>(FIELDS);
  initRecord(fields, 42, l, now);
  return fields;
}

/** refresh + evaluate + take when it fits, as store.ts does inside one CAS round. */
function tryTake(fields: StaticArray<i64>, l: Limits, r: Reservation, now: i64): Check {
  refresh(fields, l, now);
  const check = evaluate(fields, l, r, now, false);
  if (check.ok) take(fields, l, r, now);
  return check;
}

describe("throttle config", () => {
  it("reads a full rule", () => {
    const c = configOf('{"rules":[{"name":"team","match":{"models":["gpt-4o","llama-*"],"apis":["openai.chat"],"paths":["/v1/*"],"headers":[{"name":"x-team","exact":"a"},{"name":"x-b","present":false}]},' +
      '"key":["header:x-api-key","peer","model"],"limits":{"requests_per_second":20,"tokens_per_minute":1000,"max_in_flight":3},' +
      '"action":"queue","queue":{"max_wait_ms":2000,"max_length":5},"default_output_tokens":64,"key_slots":16}],"tick_ms":20}');
    const rule = c.rules[0];
    expect(rule.name).toBe("team");
    expect(rule.action).toBe(Action.Queue);
    expect(rule.maxWaitMs).toBe(2000);
    expect(rule.maxQueueLength).toBe(5);
    expect(rule.key.length).toBe(3);
    expect(rule.key[0].kind).toBe(KeyKind.Header);
    expect(rule.key[0].header).toBe("x-api-key");
    expect(rule.key[1].kind).toBe(KeyKind.Peer);
    expect(rule.limits.requestsPerSecond).toBe(20);
    expect(rule.limits.countsTokens).toBe(true);
    expect(rule.defaultOutputTokens).toBe(64);
    expect(rule.keySlots).toBe(16);
    expect(c.queues).toBe(true);
    expect(c.tickMs).toBe(20);
    expect(rule.matchesRequest("llama-3-8b", ApiShape.OpenAIChat, "/v1/chat/completions?x=1")).toBe(true);
    expect(rule.matchesRequest("gpt-4o-mini", ApiShape.OpenAIChat, "/v1/chat/completions")).toBe(false);
    expect(rule.matchesRequest("gpt-4o", ApiShape.AnthropicMessages, "/v1/messages")).toBe(false);
    expect(rule.matchesRequest("gpt-4o", ApiShape.OpenAIChat, "/v2/chat/completions")).toBe(false);
    expect(rule.headers[0].matches("a")).toBe(true);
    expect(rule.headers[0].matches("ab")).toBe(false);
    expect(rule.headers[1].matches(null)).toBe(true);
    expect(rule.headers[1].matches("")).toBe(false);
  });

  it("defaults: reject, any request, names by position", () => {
    const c = configOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1}}]}');
    expect(c.rules[0].name).toBe("rule-0");
    expect(c.rules[0].action).toBe(Action.Reject);
    expect(c.rules[0].defaultOutputTokens).toBe(1024);
    expect(c.rules[0].matchesRequest("anything", ApiShape.AnthropicMessages, "/v1/messages")).toBe(true);
    expect(c.queues).toBe(false);
    expect(c.responseHeaders).toBe(true);
    expect(configOf("").rules.length).toBe(0);
  });

  it("collects redirect headers so clients cannot forge them", () => {
    const c = configOf('{"rules":[{"key":["model"],"limits":{"tokens_per_minute":10},"action":"redirect","redirect":{"header":"x-llm-fallback","value":"small"}}]}');
    expect(c.redirectHeaders).toStrictEqual(["x-llm-fallback"]);
    expect(c.rules[0].redirectValue).toBe("small");
  });

  it("leaves its verdict in Envoy's filter state unless told otherwise", () => {
    expect(configOf('{"rules":[]}').filterState).toBe(true);
    expect(configOf('{"rules":[],"filter_state":false}').filterState).toBe(false);
    expect(errorOf('{"filter_state":"false"}')).toBe('filter_state: must be true or false, got "false"');
  });

  it("reads hold_headers_timeout_ms as admission does", () => {
    expect(configOf("{}").holdHeadersTimeoutMs).toBe(1000);
    expect(configOf('{"hold_headers_timeout_ms":10}').holdHeadersTimeoutMs).toBe(10);
    expect(errorOf('{"hold_headers_timeout_ms":0}')).toBe("hold_headers_timeout_ms: must be an integer from 10 to 60000, got 0");
    expect(errorOf('{"hold_headers_timeout_ms":"1s"}')).toBe('hold_headers_timeout_ms: must be an integer from 10 to 60000, got "1s"');
  });

  it("names the field of each error", () => {
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"action":"drop"}]}'))
      .toBe('rules[0].action: must be one of reject, queue, redirect, got "drop"');
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"tokens_per_minute":-5}}]}'))
      .toBe("rules[0].limits.tokens_per_minute: must be an integer from 1 to 1000000000000, got -5");
    expect(errorOf('{"rules":[{"limits":{"max_in_flight":1}}]}'))
      .toBe("rules[0].key: required: whom the limits are per (header:<name>, peer, model or global)");
    expect(errorOf('{"rules":[{"key":[],"limits":{"max_in_flight":1}}]}'))
      .toBe("rules[0].key: must name at least one key source (header:<name>, peer, model or global)");
    expect(errorOf('{"rules":[{"key":["cookie"],"limits":{"max_in_flight":1}}]}'))
      .toBe('rules[0].key[0]: unknown key source "cookie" (known: header:<name>, peer, model or global)');
    expect(errorOf('{"rules":[{"key":["header:"],"limits":{"max_in_flight":1}}]}'))
      .toBe('rules[0].key[0]: "header:": the header name after header: must be a lower-case HTTP header name');
    expect(errorOf('{"rules":[{"key":["global","model"],"limits":{"max_in_flight":1}}]}'))
      .toBe("rules[0].key[0]: global is one budget for all matching requests and cannot be combined with other key sources");
    expect(errorOf('{"rules":[{"key":["global"]}]}'))
      .toBe("rules[0].limits: required: set at least one of requests_per_second, tokens_per_minute, input_tokens_per_minute, output_tokens_per_minute, max_in_flight");
    expect(errorOf('{"rules":[{"key":["global"],"limits":{}}]}'))
      .toBe("rules[0].limits: set at least one of requests_per_second, tokens_per_minute, input_tokens_per_minute, output_tokens_per_minute, max_in_flight");
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"action":"redirect"}]}'))
      .toBe('rules[0].redirect: required with action "redirect": {"header": ..., "value": ...}');
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"queue":{"max_length":2}}]}'))
      .toBe('rules[0].queue: only applies with action "queue"');
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"action":"queue","queue":{"max_wait_ms":0}}]}'))
      .toBe("rules[0].queue.max_wait_ms: must be an integer from 1 to 300000, got 0");
    expect(errorOf('{"rules":[{"name":"a b","key":["global"],"limits":{"max_in_flight":1}}]}'))
      .toBe("rules[0].name: must be 1 to 64 letters, digits, _ or -");
    expect(errorOf('{"rules":[{"name":"a","key":["global"],"limits":{"max_in_flight":1}},{"name":"a","key":["global"],"limits":{"max_in_flight":1}}]}'))
      .toBe('rules[1].name: "a" is already the name of rules[0]');
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"match":{"apis":["openai.responses"]}}]}'))
      .toBe('rules[0].match.apis[0]: unknown API "openai.responses" (known: openai.chat, openai.completions, openai.embeddings, anthropic.messages)');
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"match":{"headers":[{"name":"x","exact":"a","prefix":"b"}]}}]}'))
      .toBe("rules[0].match.headers[0]: needs exactly one of exact, prefix or present");
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"match":{"models":["gpt-*-mini"]}}]}'))
      .toBe("rules[0].match.models[0]: a model may end in * (a prefix match) but contain no other *");
    expect(errorOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1,"rpm":3}}]}'))
      .toBe("rules[0].limits.rpm: unknown key (allowed: requests_per_second, tokens_per_minute, input_tokens_per_minute, output_tokens_per_minute, max_in_flight)");
    expect(errorOf('{"rule":[]}')).toBe("rule: unknown key (allowed: rules, tokenizer, max_body_bytes, tick_ms, response_headers, hold_headers_timeout_ms, rate_limit_service, filter_state)");
  });
});

describe("throttle policy", () => {
  it("admits up to the requests per second, then says when the next one fits", () => {
    const l = limits(5, 0, 0);
    const fields = record(l, T0);
    const r = new Reservation(10, 10);
    for (let i = 0; i < 5; i++) expect(tryTake(fields, l, r, T0).ok).toBe(true);
    const denied = tryTake(fields, l, r, T0);
    expect(denied.deny).toBe(Deny.Requests);
    expect(denied.retryAfterMs).toBe(200);
    expect(denied.remainingRequests).toBe(0);
    expect(tryTake(fields, l, r, T0 + 199).ok).toBe(false);
    expect(tryTake(fields, l, r, T0 + 200).ok).toBe(true);
  });

  it("reports remaining requests after this one", () => {
    const l = limits(3, 0, 0);
    const fields = record(l, T0);
    const first = tryTake(fields, l, new Reservation(), T0);
    expect(first.remainingRequests).toBe(2);
    expect(first.resetRequestsMs).toBe(334);
  });

  it("keeps tokens for a sliding minute and frees them bucket by bucket", () => {
    const l = limits(0, 1000, 0);
    const fields = record(l, T0);
    expect(tryTake(fields, l, new Reservation(300, 300), T0).ok).toBe(true);
    expect(tryTake(fields, l, new Reservation(200, 100), T0 + BUCKET_MS).ok).toBe(true);
    const denied = tryTake(fields, l, new Reservation(60, 60), T0 + 2 * BUCKET_MS);
    expect(denied.deny).toBe(Deny.Tokens);
    // The first 600 tokens leave with their bucket, 65 s after T0; that is enough room.
    expect(denied.retryAfterMs).toBe(<i64>BUCKETS * BUCKET_MS - 2 * BUCKET_MS);
    expect(denied.remainingTokens).toBe(100);
    // Still counted 60 s later: never more than the budget in any minute.
    expect(tryTake(fields, l, new Reservation(60, 60), T0 + 60_000).ok).toBe(false);
    const later = tryTake(fields, l, new Reservation(60, 60), T0 + <i64>BUCKETS * BUCKET_MS);
    expect(later.ok).toBe(true);
    expect(later.remainingTokens).toBe(1000 - 300 - 120);
  });

  it("refuses a request larger than the whole budget without a retry time", () => {
    const l = limits(0, 1000, 0);
    const fields = record(l, T0);
    const check = tryTake(fields, l, new Reservation(900, 200), T0);
    expect(check.deny).toBe(Deny.TooLarge);
    expect(check.retryAfterMs).toBe(0);
  });

  it("limits input and output tokens separately", () => {
    const l = new Limits();
    l.inputTokensPerMinute = 100;
    l.outputTokensPerMinute = 50;
    const fields = record(l, T0);
    expect(tryTake(fields, l, new Reservation(60, 40), T0).ok).toBe(true);
    expect(tryTake(fields, l, new Reservation(60, 5), T0).deny).toBe(Deny.InputTokens);
    expect(tryTake(fields, l, new Reservation(10, 20), T0).deny).toBe(Deny.OutputTokens);
    expect(tryTake(fields, l, new Reservation(40, 10), T0).ok).toBe(true);
  });

  it("counts requests in flight and frees them when settled", () => {
    const l = limits(0, 0, 2);
    const fields = record(l, T0);
    const r = new Reservation(1, 1);
    expect(tryTake(fields, l, r, T0).ok).toBe(true);
    expect(tryTake(fields, l, r, T0).ok).toBe(true);
    expect(tryTake(fields, l, r, T0).deny).toBe(Deny.InFlight);
    settle(fields, T0 / BUCKET_MS, r, r, T0 + 10);
    expect(inFlight(fields, T0 + 10)).toBe(1);
    expect(tryTake(fields, l, r, T0 + 10).ok).toBe(true);
  });

  it("replaces the reservation by what was used, in the bucket it was taken in", () => {
    const l = limits(0, 1000, 0);
    const fields = record(l, T0);
    const reserved = new Reservation(100, 500);
    expect(tryTake(fields, l, reserved, T0).ok).toBe(true);
    refresh(fields, l, T0 + 2 * BUCKET_MS);
    settle(fields, T0 / BUCKET_MS, reserved, new Reservation(90, 30), T0 + 2 * BUCKET_MS);
    expect(windowUsed(fields, F_TOTAL)).toBe(120);
    expect(fields[F_TOTAL + <i32>((T0 / BUCKET_MS) % BUCKETS)]).toBe(120);
    expect(inFlight(fields, T0 + 2 * BUCKET_MS)).toBe(0);
  });

  it("charges an under-reservation even after its bucket left the window", () => {
    const l = limits(0, 1000, 0);
    const fields = record(l, T0);
    const reserved = new Reservation(10, 10);
    tryTake(fields, l, reserved, T0);
    const late = T0 + 20 * BUCKET_MS;
    refresh(fields, l, late);
    settle(fields, T0 / BUCKET_MS, reserved, new Reservation(10, 50), late);
    expect(windowUsed(fields, F_TOTAL)).toBe(40);
  });

  it("undoes an admission completely", () => {
    const l = limits(2, 1000, 1);
    const fields = record(l, T0);
    const r = new Reservation(100, 100);
    tryTake(fields, l, r, T0);
    untake(fields, l, T0 / BUCKET_MS, r, T0);
    expect(inFlight(fields, T0)).toBe(0);
    expect(fields[F_REQUEST_CREDIT]).toBe(2000);
    expect(windowUsed(fields, F_TOTAL)).toBe(0);
  });

  it("makes newcomers queue behind waiting requests when asked", () => {
    const l = limits(0, 1000, 0);
    const fields = record(l, T0);
    refreshHolds(fields, T0);
    addHeld(fields, F_WAITING, 1);
    expect(evaluate(fields, l, new Reservation(1, 1), T0, true).deny).toBe(Deny.Waiting);
    expect(evaluate(fields, l, new Reservation(1, 1), T0, false).ok).toBe(true);
  });

  it("gives the turn to the oldest waiting request, on a later try, and passes it on", () => {
    const l = limits(0, 1000, 0);
    const fields = record(l, T0);
    const older = waitOrder(T0, 7);
    const younger = waitOrder(T0 + 5, 3);
    expect(takeTurn(fields, younger, T0 + 10, 300)).toBe(Turn.Claimed);
    expect(takeTurn(fields, older, T0 + 20, 300)).toBe(Turn.Claimed);
    expect(takeTurn(fields, younger, T0 + 30, 300)).toBe(Turn.Other);
    expect(takeTurn(fields, older, T0 + 70, 300)).toBe(Turn.Mine);
    endTurn(fields, younger);
    expect(takeTurn(fields, younger, T0 + 80, 300)).toBe(Turn.Other);
    endTurn(fields, older);
    expect(takeTurn(fields, younger, T0 + 90, 300)).toBe(Turn.Claimed);
    expect(takeTurn(fields, younger, T0 + 140, 300)).toBe(Turn.Mine);
    // A holder that stops renewing (its worker lost it) gives way.
    const third = waitOrder(T0 + 50, 1);
    expect(takeTurn(fields, third, T0 + 400, 300)).toBe(Turn.Other);
    expect(takeTurn(fields, third, T0 + 441, 300)).toBe(Turn.Claimed);
  });

  it("frees a record only when nothing is in flight, waiting or counted", () => {
    const l = limits(1, 1000, 0);
    const fields = record(l, T0);
    const worker = new Hold();
    expect(admitAs(worker, fields, l, T0)).toBe(true);
    // A request that lasts an hour, renewed by its worker every step.
    for (let now = T0 + HOLD_STEP_MS; now <= T0 + 3_600_000; now += HOLD_STEP_MS) renewAs(worker, fields, now);
    expect(isIdle(fields, T0 + 3_600_000)).toBe(false);
    settleAs(worker, fields, l, T0 + 3_600_000);
    expect(isIdle(fields, T0 + 3_600_000 + 60_000)).toBe(false);
    expect(isIdle(fields, T0 + 3_600_000 + <i64>BUCKETS * BUCKET_MS)).toBe(true);
  });

  it("reserves the prompt plus max_tokens, else the rule's default; nothing for embeddings output", () => {
    const rule = new Rule();
    rule.defaultOutputTokens = 256;
    expect(reservationFor(rule, ApiShape.OpenAIChat, 40, 100).total).toBe(140);
    expect(reservationFor(rule, ApiShape.OpenAIChat, 40, -1).total).toBe(296);
    expect(reservationFor(rule, ApiShape.OpenAIEmbeddings, 40, -1).total).toBe(40);
  });

  it("words refusals like OpenAI", () => {
    const rule = new Rule();
    rule.name = "team";
    rule.limits.tokensPerMinute = 1000;
    const check = new Check();
    check.deny = Deny.Tokens;
    check.retryAfterMs = 1500;
    expect(refusalMessage(rule, check, new Reservation(10, 20))).toBe("Rate limit reached for tokens per minute (llm-throttle rule `team`): limit 1000, requested 30. Please try again in 1.5s.");
  });

  it("formats durations and Retry-After", () => {
    expect(formatDuration(0)).toBe("0ms");
    expect(formatDuration(250)).toBe("250ms");
    expect(formatDuration(1000)).toBe("1s");
    expect(formatDuration(1500)).toBe("1.5s");
    expect(formatDuration(17_280)).toBe("17.28s");
    expect(formatDuration(360_000)).toBe("6m0s");
    expect(formatDuration(65_005)).toBe("1m5.005s");
    expect(retryAfterSeconds(0)).toBe(1);
    expect(retryAfterSeconds(1000)).toBe(1);
    expect(retryAfterSeconds(1001)).toBe(2);
  });

  it("hashes key parts so that their boundaries matter", () => {
    const ab = new KeyHash().add("r").add("ab").add("c").fingerprint();
    const abc = new KeyHash().add("r").add("a").add("bc").fingerprint();
    expect(ab).not.toBe(abc);
    expect(new KeyHash().add("r").add("ab").add("c").fingerprint()).toBe(ab);
    expect(ab).not.toBe(0);
    const slot = homeSlot(ab, 7);
    expect(slot >= 0 && slot < 7).toBe(true);
  });
});

// ---- holds on leases: what store.ts does for one worker inside one CAS round ----

function copyOf(fields: StaticArray<i64>): StaticArray<i64> {
  const copy = new StaticArray<i64>(fields.length);
  for (let i = 0; i < fields.length; i++) copy[i] = fields[i];
  return copy;
}

/** A worker admits a request: renews its holds and takes a slot, written only when it fits. */
function admitAs(worker: Hold, fields: StaticArray<i64>, l: Limits, now: i64): bool {
  const next = copyOf(fields);
  refresh(next, l, now);
  const head = renewHold(next, worker);
  if (!evaluate(next, l, new Reservation(), now, false).ok) return false;
  take(next, l, new Reservation(), now);
  for (let i = 0; i < fields.length; i++) fields[i] = next[i];
  worker.epoch = head;
  worker.inFlight++;
  return true;
}

function settleAs(worker: Hold, fields: StaticArray<i64>, l: Limits, now: i64): void {
  refresh(fields, l, now);
  worker.epoch = renewHold(fields, worker);
  settle(fields, now / BUCKET_MS, new Reservation(), new Reservation(), now);
  worker.inFlight--;
}

/** The tick's renewal. */
function renewAs(worker: Hold, fields: StaticArray<i64>, now: i64): void {
  refreshHolds(fields, now);
  worker.epoch = renewHold(fields, worker);
}

describe("throttle record layout", () => {
  it("is pinned with its version: a changed layout must bump RECORD_LAYOUT, which keys the records apart", () => {
    // Old and new VMs share shared data during a hot update; only the version in the key keeps a
    // 55-field reader from truncating 61-field records. Change both numbers here together.
    expect(FIELDS).toBe(61);
    expect(RECORD_LAYOUT).toBe(3);
  });
});

describe("throttle holds on leases", () => {
  it("frees the slots of a worker that stops renewing (its VM failed) once the lease runs out", () => {
    const l = limits(0, 0, 1);
    const fields = record(l, T0);
    const failed = new Hold();
    const other = new Hold();
    expect(admitAs(failed, fields, l, T0)).toBe(true);
    expect(admitAs(other, fields, l, T0 + HOLD_LEASE_MS - 1)).toBe(false);
    expect(inFlight(fields, T0 + HOLD_LEASE_MS - 1)).toBe(1);
    expect(inFlight(fields, T0 + HOLD_LEASE_MS)).toBe(0);
    expect(admitAs(other, fields, l, T0 + HOLD_LEASE_MS)).toBe(true);
    expect(inFlight(fields, T0 + HOLD_LEASE_MS)).toBe(1);
  });

  it("keeps the slots of a worker that renews them, however long its requests last", () => {
    const l = limits(0, 0, 1);
    const fields = record(l, T0);
    const worker = new Hold();
    const other = new Hold();
    expect(admitAs(worker, fields, l, T0)).toBe(true);
    // Renewed from a late tick: a step plus a whole second's tick after the last renewal.
    let now = T0;
    while (now < T0 + 120_000) {
      now += HOLD_STEP_MS + 1000;
      renewAs(worker, fields, now);
      expect(admitAs(other, fields, l, now + HOLD_STEP_MS)).toBe(false);
    }
    settleAs(worker, fields, l, now);
    expect(worker.inFlight).toBe(0);
    expect(admitAs(other, fields, l, now)).toBe(true);
  });

  it("frees a worker's own slot when it settles, not another worker's", () => {
    const l = limits(0, 0, 2);
    const fields = record(l, T0);
    const a = new Hold();
    const b = new Hold();
    expect(admitAs(a, fields, l, T0)).toBe(true);
    expect(admitAs(b, fields, l, T0 + 1500)).toBe(true);
    expect(admitAs(a, fields, l, T0 + 1500)).toBe(false);
    settleAs(a, fields, l, T0 + 2600);
    expect(inFlight(fields, T0 + 2600)).toBe(1);
    // b stops renewing: its slot goes with its bucket (taken at T0 + 1500), a's settle did not move it.
    expect(inFlight(fields, T0 + 1000 + HOLD_LEASE_MS - 1)).toBe(1);
    expect(inFlight(fields, T0 + 1000 + HOLD_LEASE_MS)).toBe(0);
  });

  it("counts again the requests of a worker that stalled past the lease, and settles them to zero", () => {
    const l = limits(0, 0, 3);
    const fields = record(l, T0);
    const stalled = new Hold();
    expect(admitAs(stalled, fields, l, T0)).toBe(true);
    expect(admitAs(stalled, fields, l, T0 + 10)).toBe(true);
    const late = T0 + 10 * HOLD_LEASE_MS;
    expect(inFlight(fields, late)).toBe(0);
    renewAs(stalled, fields, late);
    expect(inFlight(fields, late)).toBe(2);
    settleAs(stalled, fields, l, late + 5);
    settleAs(stalled, fields, l, late + HOLD_STEP_MS);
    expect(inFlight(fields, late + HOLD_STEP_MS)).toBe(0);
    expect(stalled.empty).toBe(true);
  });

  it("lets places in a queue expire the same way", () => {
    const l = limits(0, 1000, 0);
    const fields = record(l, T0);
    const failed = new Hold();
    renewAs(failed, fields, T0);
    addHeld(fields, F_WAITING, 1);
    failed.waiting++;
    expect(waiting(fields, T0 + HOLD_LEASE_MS - 1)).toBe(1);
    expect(evaluate(fields, l, new Reservation(1, 1), T0 + HOLD_LEASE_MS - 1, true).deny).toBe(Deny.Waiting);
    refresh(fields, l, T0 + HOLD_LEASE_MS);
    expect(waiting(fields, T0 + HOLD_LEASE_MS)).toBe(0);
    expect(evaluate(fields, l, new Reservation(1, 1), T0 + HOLD_LEASE_MS, true).ok).toBe(true);
  });

  it("hands the record of a failed VM's key to another key once idle", () => {
    const l = limits(0, 0, 1);
    const fields = record(l, T0);
    expect(admitAs(new Hold(), fields, l, T0)).toBe(true);
    expect(isIdle(fields, T0 + IDLE_MS - 1)).toBe(false);
    expect(isIdle(fields, T0 + IDLE_MS)).toBe(true);
  });

  it("reads any record content without leaving the ring", () => {
    const l = limits(0, 0, 1);
    const values: i64[] = [-1, -7, i64.MIN_VALUE, i64.MAX_VALUE, T0 / HOLD_STEP_MS + 3];
    for (let i = 0; i < values.length; i++) {
      const fields = record(l, T0);
      fields[F_HOLD_EPOCH] = values[i];
      const worker = new Hold();
      worker.epoch = -values[i];
      worker.inFlight = 1;
      expect(inFlight(fields, T0) >= 0).toBe(true);
      refreshHolds(fields, T0);
      renewHold(fields, worker);
      addHeld(fields, F_WAITING, -1);
      expect(waiting(fields, T0)).toBe(0);
    }
  });

  it("ticks to renew holds, at tick_ms when a rule queues", () => {
    expect(tickPeriodMs(configOf('{}'))).toBe(0);
    expect(tickPeriodMs(configOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1}}]}'))).toBe(HOLD_STEP_MS / 4);
    expect(tickPeriodMs(configOf('{"rules":[{"key":["global"],"limits":{"max_in_flight":1},"action":"queue"}],"tick_ms":20}'))).toBe(20);
  });
});

/** The one rule of a config, and the limiter's answer for a request right after another took its one request per second. */
function refusedBy(ruleJson: string, reserved: Reservation): RuleAnswer {
  const rule = configOf('{"rules":[' + ruleJson + "]}").rules[0];
  const fields = record(rule.limits, T0);
  expect(tryTake(fields, rule.limits, new Reservation(1, 1), T0).ok).toBe(true);
  const answer = new RuleAnswer(rule, reserved);
  answer.check = tryTake(fields, rule.limits, reserved, T0 + 250);
  return answer;
}

const PER_SECOND = '"key":["global"],"limits":{"requests_per_second":1,"tokens_per_minute":1000}';

describe("throttle decisions", () => {
  it("admits a request every matching rule had room for", () => {
    expect(decide(null, false, false, T0).choice).toBe(Choice.Admit);
    expect(decide(null, true, true, T0).choice).toBe(Choice.Admit);
  });

  it("queues a request over a queue rule's limit until max_wait_ms from now", () => {
    const answer = refusedBy('{"action":"queue","queue":{"max_wait_ms":2000},' + PER_SECOND + "}", new Reservation(10, 10));
    const decision = decide(answer, false, false, T0 + 250);
    expect(decision.choice).toBe(Choice.Queue);
    expect(decision.deadline).toBe(T0 + 2250);
    // The body decides after the headers left: a queue still holds the request back.
    expect(decide(answer, true, false, T0 + 250).choice).toBe(Choice.Queue);
  });

  it("refuses a queue rule's request that a full queue turned away, or that waited until its deadline", () => {
    const answer = refusedBy('{"name":"q","action":"queue","queue":{"max_length":3},' + PER_SECOND + "}", new Reservation(10, 10));
    const full = decide(answer, false, true, T0 + 250);
    expect(full.choice).toBe(Choice.Reject);
    expect(full.error!.message).toBe("Too many requests waiting (llm-throttle rule `q`): the queue holds 3. Please try again in 750ms.");
    expect(full.retryAfterSeconds).toBe(1);
    const late = waitedTooLong(answer.rule, answer.check, 10_000);
    expect(late.choice).toBe(Choice.Reject);
    expect(late.error!.status).toBe(429);
    expect(late.error!.message).toBe("Rate limit reached (llm-throttle rule `q`): no room under its limits after waiting 10s. Please try again in 750ms.");
  });

  it("queues no request that alone needs more than the budget: no wait would let it in", () => {
    const answer = refusedBy('{"action":"queue",' + PER_SECOND + "}", new Reservation(900, 200));
    expect(answer.check.deny).toBe(Deny.TooLarge);
    const decision = decide(answer, false, false, T0 + 250);
    expect(decision.choice).toBe(Choice.Reject);
    expect(decision.error!.code).toBe("request_too_large_for_limit");
    // No Retry-After: the answer tells clients not to retry instead.
    expect(decision.retryAfterSeconds).toBe(-1);
  });

  it("redirects to the fallback model while the headers are here, and refuses as a reject rule once they left", () => {
    const answer = refusedBy('{"name":"r","action":"redirect","redirect":{"header":"x-llm-fallback","value":"small"},' + PER_SECOND + "}", new Reservation(10, 10));
    expect(decide(answer, false, false, T0 + 250).choice).toBe(Choice.Redirect);
    const late = decide(answer, true, false, T0 + 250);
    expect(late.choice).toBe(Choice.Reject);
    expect(late.error!.message).toBe(refusalMessage(answer.rule, answer.check, answer.reserved));
  });

  it("rejects with 429 in OpenAI's words, Retry-After in whole seconds rounded up", () => {
    const answer = refusedBy('{"name":"team",' + PER_SECOND + "}", new Reservation(10, 10));
    const decision = decide(answer, false, false, T0 + 250);
    expect(decision.choice).toBe(Choice.Reject);
    const error = decision.error!;
    expect(error.status).toBe(429);
    expect(error.code).toBe("rate_limit_exceeded");
    expect(error.message).toBe("Rate limit reached for requests (llm-throttle rule `team`): limit 1 per second. Please try again in 750ms.");
    expect(decision.check!.deny).toBe(Deny.Requests);
    expect(decision.retryAfterSeconds).toBe(1);
  });
});
