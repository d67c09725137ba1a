// The throttle filter's contexts: they gather what a request is (from the admission filter's facts,
// or from the body when that filter is not installed), ask store.ts and policy.ts whether it fits,
// carry out the answer (forward, refuse, park, redirect), and settle the account from the response.
import { ConfigErrors, ConfigObject } from "../json/config-reader";
import {
  StreamContext,
  FilterDataStatusValues,
  FilterHeadersStatusValues,
} from "../host/contexts";
import { BodyStep, FactsOrBodyStream } from "../llm/facts-or-body";
import { errorBody } from "../llm/api-errors";
import { defineCounter, defineGauge, incrementMetric, Logger, responseBody, ResponseHeaders, sendResponse } from "../host/calls";
import { nowMillis, propertyString, removeRequestHeader, requestHeader, responseHeader, setEffectiveContext, setRequestHeader, setResponseHeader } from "../host/callback-cache";
import { setFilterState } from "../host/filter-state";
import { FACT_THROTTLE } from "../llm/filter-state-names";
import { ApiShape, apiShapeForPath, LlmRequest, readLlmRequest, routedPath } from "../llm/request";
import { RequestFacts } from "../llm/request-facts";
import { UsageTracker } from "../llm/usage-tracker";
import { publishedUsage, UsageFigures, usageAnnounced } from "../llm/usage-handoff";
import { isShadowAuthority, ROUTE_FALLBACK, setRoute } from "../llm/route";
import { KeyHash } from "../text/key-hash";
import { TokenEstimator } from "../llm/tokens";
import { Action, KeyKind, readThrottleConfig, Rule, ThrottleConfig } from "./config";
import {
  Check, Choice, decide, Decision, Deny, DENY_NAMES, formatDuration, Reservation, reservationFor, RuleAnswer, tickPeriodMs, waitedTooLong, waitOrder,
} from "./policy";
import { admit, Asking, Holds, joinQueue, leaveQueue, settleRecord, SlotRef, undoAdmission } from "./store";
import { asciiLower } from "../text/ascii";
import { HeaderHold, HoldingRoot } from "../host/header-hold";

export const FILTER_NAME = "llm-throttle";
/** Counter: requests whose headers this filter held to read the body, let go without it (host/hold-rules.ts). */
export const METRIC_HOLD_TIMEOUTS = "llm_throttle_hold_headers_timeouts_total";
const PEER_PROPERTY: string[] = ["connection", "uri_san_peer_certificate"];
/** Stands for an absent key part, so that "no header" and an empty header are different keys. */
const ABSENT = "\u0000";
/** The body was too large to read; its prompt is guessed from its size, a token per 4 bytes. */
const BYTES_PER_TOKEN: i64 = 4;

const logger = new Logger(FILTER_NAME);

/**
 * Per rule, in Envoy's stats as wasmcustom.llm_throttle.<rule>.<name>. The gauges are what a
 * request holds right now: requests in flight, requests waiting, tokens reserved and not settled.
 */
class RuleMetrics {
  admitted: i32;
  rejected: i32;
  queued: i32;
  queueTimeouts: i32;
  redirected: i32;
  tokens: i32;
  /** Requests whose key found every slot it may use held by other active keys, and shared one. */
  sharedSlots: i32;
  inFlight: i32;
  waiting: i32;
  reserved: i32;
  /** Whether this root said that the rule, a redirect, could not move a request whose headers had left. */
  warnedRedirectTooLate: bool = false;

  constructor(rule: Rule) {
    const base = "llm_throttle." + rule.name + ".";
    this.admitted = defineCounter(base + "admitted");
    this.rejected = defineCounter(base + "rejected");
    this.queued = defineCounter(base + "queued");
    this.queueTimeouts = defineCounter(base + "queue_timeouts");
    this.redirected = defineCounter(base + "redirected");
    this.tokens = defineCounter(base + "tokens_used");
    this.sharedSlots = defineCounter(base + "shared_key_slots");
    this.inFlight = defineGauge(base + "in_flight");
    this.waiting = defineGauge(base + "waiting");
    this.reserved = defineGauge(base + "tokens_reserved");
  }
}

/** Logged once per root when Envoy is seen keeping a held request's body from this filter. */
const HOLD_WARNING =
  "llm-admission's facts did not come with the request headers, so this filter held them to read the body, but Envoy does not hand " +
  "this filter the body of a request whose headers it holds: this worker now lets the headers go and decides from the body " +
  "(rejecting and queueing still work; redirect rules answer 429); set allow_on_headers_stop_iteration: true on llm-throttle's Wasm filter, " +
  "or have llm-admission hold the headers (hold_headers: true, with the flag on its Wasm filter) so that its facts come with them";

export class ThrottleRoot extends HoldingRoot {
  config: ThrottleConfig = new ThrottleConfig();
  metrics: RuleMetrics[] = [];
  /** One estimator per worker, for bodies read here: a body is read within one callback. */
  estimator: TokenEstimator = new TokenEstimator();
  /** Requests of this worker parked by a queue rule, oldest first. */
  waiting: ThrottleStream[] = [];
  /** What this worker's requests hold in shared records, renewed from the tick so that a VM that fails leaves nothing held. */
  holds: Holds = new Holds();

  constructor(contextId: u32) {
    super(contextId, new HeaderHold(logger, METRIC_HOLD_TIMEOUTS, HOLD_WARNING));
  }

  createContext(contextId: u32): StreamContext {
    return new ThrottleStream(contextId, this);
  }

  configure(source: ConfigObject, errors: ConfigErrors): void {
    const parsed = readThrottleConfig(source, errors);
    if (parsed.config == null) return;
    const config = parsed.config!;
    this.config = config;
    this.estimator = new TokenEstimator(config.tokenizer);
    const metrics: RuleMetrics[] = [];
    for (let i = 0; i < config.rules.length; i++) metrics.push(new RuleMetrics(unchecked(config.rules[i])));
    this.metrics = metrics;
    this.hold.configure(config.holdHeadersTimeoutMs, config.rules.length > 0);
  }

  /** The queues' and leases' period, or the held headers' when shorter. */
  tickPeriodMs(): u32 {
    const own = <u32>tickPeriodMs(this.config);
    const held = super.tickPeriodMs();
    return own == 0 || (held != 0 && held < own) ? held : own;
  }

  onTick(): void {
    const now = nowMillis();
    this.releaseWaiting(now);
    this.holds.renew(now);
    super.onTick();
  }

  /**
   * Admits waiting requests that now fit, oldest first, and refuses those that waited too long.
   * A key whose oldest request still does not fit holds back its younger ones (first come, first
   * served); other keys' requests go on being tried.
   */
  releaseWaiting(now: i64): void {
    if (this.waiting.length == 0) return;
    const blocked: string[] = [];
    let i = 0;
    while (i < this.waiting.length) {
      const stream = unchecked(this.waiting[i]);
      if (now >= stream.deadline) {
        this.waiting.splice(i, 1);
        stream.timeOut(now);
        continue;
      }
      const key = stream.waitKey();
      if (!blocked.includes(key)) {
        if (stream.retry(now)) {
          this.waiting.splice(i, 1);
          continue;
        }
        blocked.push(key);
      }
      i++;
    }
  }

  /** A waiting request that stopped renewing its turn for this long is taken to be gone. */
  staleTurnMs(): i64 {
    return 4 * this.config.tickMs + 100;
  }

  forget(stream: ThrottleStream): void {
    const index = this.waiting.indexOf(stream);
    if (index >= 0) this.waiting.splice(index, 1);
  }
}

/** One matching rule's part in a request: what the policy reads of it, its key, and where it was taken. */
class Ticket extends RuleAnswer {
  slot: SlotRef | null = null;
  epoch: i64 = 0;
  taken: bool = false;

  constructor(rule: Rule, public metrics: RuleMetrics, public fingerprint: i64, reserved: Reservation) {
    super(rule, reserved);
  }
}

/** Request headers by name, read while Envoy still hands them to the filter. */
class KeptHeaders {
  values: Array<string | null> = [];

  constructor(public names: string[]) {}

  static read(names: string[]): KeptHeaders {
    const kept = new KeptHeaders(names);
    for (let i = 0; i < names.length; i++) kept.values.push(requestHeader(unchecked(names[i])));
    return kept;
  }

  /** Null for a header the request did not have, or one not kept (no decision reads it). */
  get(name: string): string | null {
    const at = this.names.indexOf(name);
    return at >= 0 ? unchecked(this.values[at]) : null;
  }
}

enum Phase {
  Idle = 0,
  /** No facts from an earlier filter: the body is being buffered to read them here. */
  ReadingBody,
  Waiting,
  Admitted,
  Done,
}

enum Verdict {
  Continue = 0,
  Pause,
  /** A local response was sent. */
  Stop,
}

export class ThrottleStream extends FactsOrBodyStream {
  deadline: i64 = 0;

  private phase: Phase = Phase.Idle;
  private shape: ApiShape = ApiShape.Unknown;
  private path: string = "";
  private promptTokens: i64 = 0;
  private tickets: Ticket[] = [];
  private waitingOn: Ticket | null = null;
  private waitSlot: SlotRef | null = null;
  private waitingSince: i64 = 0;
  private order: i64 = 0;
  private lastCheck: Check = new Check();
  private tracker: UsageTracker | null = null;
  private status: i32 = 0;
  /** The response body is compressed: its usage cannot be read, so the reservation stands. */
  private opaque: bool = false;
  /** The metrics filter reads the response and hands over its usage (usage-handoff.ts). */
  private usageHandedOver: bool = false;
  /** The request headers the decision reads, kept as they went upstream (headersGoFirst). */
  private kept: KeptHeaders | null = null;

  constructor(contextId: u32, private root: ThrottleRoot) {
    super(contextId, root, root.hold);
  }

  onRequestHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    const config = this.root.config;
    for (let i = 0; i < config.redirectHeaders.length; i++) removeRequestHeader(unchecked(config.redirectHeaders[i]));
    if (config.rules.length == 0) return FilterHeadersStatusValues.Continue;
    const method = requestHeader(":method");
    const path = requestHeader(":path");
    if (method == null || method != "POST" || path == null) return FilterHeadersStatusValues.Continue;
    // Rules match the path as the model server routes it, so percent-escapes cannot dodge a rule.
    this.path = routedPath(path);
    const facts = this.earlierFacts();
    if (facts != null) return headersVerdict(this.decideWith(facts));
    this.shape = apiShapeForPath(path);
    if (this.shape == ApiShape.Unknown) return FilterHeadersStatusValues.Continue;
    if (endOfStream) return headersVerdict(this.decideWithRequest(readLlmRequest(new Uint8Array(0), this.shape, this.root.estimator)));
    // No admission facts with the headers: read the body for the model and the prompt.
    this.phase = Phase.ReadingBody;
    return this.awaitBody();
  }

  onRequestBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    if (this.phase == Phase.Waiting) return FilterDataStatusValues.StopIterationAndBuffer;
    if (this.phase != Phase.ReadingBody) return FilterDataStatusValues.Continue;
    const step = this.bodyStep(bodyBufferLength, endOfStream, this.root.config.maxBodyBytes);
    if (step == BodyStep.Buffer) return FilterDataStatusValues.StopIterationAndBuffer;
    const facts = this.facts;
    if (facts != null) return bodyVerdict(this.decideWith(facts));
    if (step == BodyStep.OverLimit) {
      this.promptTokens = <i64>bodyBufferLength / BYTES_PER_TOKEN;
      return bodyVerdict(this.applyRules("", -1));
    }
    return bodyVerdict(this.decideWithRequest(this.readRequest(bodyBufferLength, this.shape, this.root.estimator)));
  }

  onResponseHeaders(_headers: u32, _end_of_stream: bool): FilterHeadersStatusValues {
    if (this.phase != Phase.Admitted) return FilterHeadersStatusValues.Continue;
    const status = responseHeader(":status");
    this.status = status != null ? I32.parseInt(status) : 0;
    if (this.root.config.responseHeaders) this.addRateLimitHeaders();
    if (this.status < 200 || this.status >= 300 || !this.countsTokens()) return FilterHeadersStatusValues.Continue;
    const encoding = responseHeader("content-encoding");
    if (encoding != null && encoding.length > 0 && asciiLower(encoding) != "identity") {
      this.opaque = true;
    } else if (usageAnnounced(this.root.config.tokenizer)) {
      this.usageHandedOver = true;
    } else {
      this.tracker = new UsageTracker(UsageTracker.isEventStream(responseHeader("content-type")), this.root.config.tokenizer);
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(bodyBufferLength: usize, _end_of_stream: bool): FilterDataStatusValues {
    const tracker = this.tracker;
    if (tracker != null && bodyBufferLength > 0) tracker.onChunk(responseBody(0, <u32>bodyBufferLength), nowMillis());
    return FilterDataStatusValues.Continue;
  }

  onDone(): bool {
    this.end();
    return true;
  }

  onLog(): void {
    // The metrics filter publishes the usage in its own onLog, which Envoy runs after this one;
    // every filter's onDone comes after all of them.
    if (this.usageHandedOver) return;
    this.end();
  }

  // ---- the request headers ----

  /** A request header a decision reads: the kept copy once the headers went on (Envoy gives none then). */
  private header(name: string): string | null {
    const kept = this.kept;
    return kept != null ? kept.get(name) : requestHeader(name);
  }

  /** The headers go upstream before the decision, made from the body (and unable to redirect): keep what it will read. */
  protected headersGoFirst(): void {
    this.kept = KeptHeaders.read(this.root.config.headerNames);
  }

  private headersMatch(rule: Rule): bool {
    for (let i = 0; i < rule.headers.length; i++) {
      const match = unchecked(rule.headers[i]);
      if (!match.matches(this.header(match.name))) return false;
    }
    return true;
  }

  /** Whom the request counts against under this rule, as a hash of the rule's key parts. */
  private fingerprint(rule: Rule, model: string): i64 {
    const hash = new KeyHash().add(rule.name);
    for (let i = 0; i < rule.key.length; i++) {
      const source = unchecked(rule.key[i]);
      let part: string | null = "";
      if (source.kind == KeyKind.Header) part = this.header(source.header);
      else if (source.kind == KeyKind.Peer) part = propertyString(PEER_PROPERTY);
      else if (source.kind == KeyKind.Model) part = model;
      hash.add(part != null ? part : ABSENT);
    }
    return hash.fingerprint();
  }

  // ---- deciding ----

  private decideWith(facts: RequestFacts): Verdict {
    this.shape = facts.shape != ApiShape.Unknown ? facts.shape : apiShapeForPath(this.path);
    this.promptTokens = <i64>facts.promptTokens;
    return this.applyRules(facts.model, facts.maxTokens);
  }

  /** A body read here decides even when it is not a well-formed request: what it did say is counted. */
  private decideWithRequest(request: LlmRequest): Verdict {
    this.promptTokens = <i64>request.promptTokens;
    return this.applyRules(request.model, request.maxTokens);
  }

  /** Asks the limiter of each rule the request matches, and carries out what the policy makes of the answers. */
  private applyRules(model: string, maxTokens: i64): Verdict {
    const config = this.root.config;
    const authority = this.header(":authority");
    const shadow = authority != null && isShadowAuthority(authority);
    for (let i = 0; i < config.rules.length; i++) {
      const rule = unchecked(config.rules[i]);
      if (shadow && !rule.countShadow) continue;
      if (!rule.matchesRequest(model, this.shape, this.path) || !this.headersMatch(rule)) continue;
      const reservation = reservationFor(rule, this.shape, this.promptTokens, maxTokens);
      this.tickets.push(new Ticket(rule, unchecked(this.root.metrics[i]), this.fingerprint(rule, model), reservation));
    }
    if (this.tickets.length == 0) {
      this.phase = Phase.Done;
      return Verdict.Continue;
    }
    const now = nowMillis();
    const refused = this.claim(now, false);
    if (refused != null && logger.debugEnabled()) {
      const check = refused.check;
      logger.debug(this.contextId, "rule " + refused.rule.name + " over its " + DENY_NAMES[<i32>check.deny] + " limit; retry in " + formatDuration(check.retryAfterMs));
    }
    const decision = decide(refused, this.headersGone, false, now);
    switch (decision.choice) {
      case Choice.Admit:
        this.admitted(false);
        return Verdict.Continue;
      case Choice.Redirect:
        return this.redirect(refused!);
      case Choice.Queue:
        return this.enqueue(refused!, decision, now);
      default:
        if (refused!.rule.action == Action.Redirect) this.warnRedirectTooLate(refused!);
        return this.reject(refused!, decision);
    }
  }

  /**
   * Takes each matching rule's reservation; all must have room, or none keeps what it took. Returns
   * the first rule without room, or null when the request was admitted by all.
   */
  private claim(now: i64, fromQueue: bool): Ticket | null {
    for (let i = 0; i < this.tickets.length; i++) {
      const ticket = unchecked(this.tickets[i]);
      const asking = fromQueue
        ? new Asking(false, ticket == this.waitingOn ? this.order : 0, this.root.staleTurnMs())
        : new Asking(ticket.rule.action == Action.Queue);
      const result = admit(ticket.rule, ticket.fingerprint, ticket.slot, ticket.reserved, now, asking, this.root.holds);
      if (ticket.slot == null && result.slot.shared) {
        incrementMetric(ticket.metrics.sharedSlots, 1);
        logger.warn(this.contextId, "rule " + ticket.rule.name + ": every key slot this key may use is held by another active key; raise key_slots (now " + ticket.rule.keySlots.toString() + ")");
      }
      ticket.slot = result.slot;
      ticket.check = result.check;
      if (result.admitted) {
        ticket.taken = true;
        ticket.epoch = result.epoch;
        continue;
      }
      this.undo(i, now);
      return ticket;
    }
    return null;
  }

  private undo(count: i32, now: i64): void {
    for (let i = 0; i < count; i++) {
      const ticket = unchecked(this.tickets[i]);
      if (!ticket.taken) continue;
      undoAdmission(ticket.rule, ticket.slot!, ticket.epoch, ticket.reserved, now, this.root.holds);
      ticket.taken = false;
    }
  }

  private admitted(afterWait: bool): void {
    this.phase = Phase.Admitted;
    for (let i = 0; i < this.tickets.length; i++) {
      const ticket = unchecked(this.tickets[i]);
      incrementMetric(ticket.metrics.admitted, 1);
      incrementMetric(ticket.metrics.inFlight, 1);
      incrementMetric(ticket.metrics.reserved, ticket.reserved.total);
    }
    setFilterState(FACT_THROTTLE, afterWait ? "admitted_after_wait" : "admitted");
  }

  private redirect(ticket: Ticket): Verdict {
    const rule = ticket.rule;
    // Envoy picks the route again by itself when a Wasm filter changes a request header (and has no
    // proxy_clear_route_cache import to ask for it: a module importing it does not load).
    setRequestHeader(rule.redirectHeader, rule.redirectValue);
    setRoute(ROUTE_FALLBACK);
    incrementMetric(ticket.metrics.redirected, 1);
    setFilterState(FACT_THROTTLE, "redirected:" + rule.name);
    this.phase = Phase.Done;
    return Verdict.Continue;
  }

  /** A redirect rule's request whose headers went upstream keeps its route, and is refused: said once per rule and worker. */
  private warnRedirectTooLate(ticket: Ticket): void {
    const metrics = ticket.metrics;
    if (metrics.warnedRedirectTooLate) return;
    metrics.warnedRedirectTooLate = true;
    logger.warn(this.contextId, "rule " + ticket.rule.name + ": a request over its limit had its headers upstream already, so it cannot be redirected " +
      "and is answered 429; redirect needs the headers held until the body is read: set allow_on_headers_stop_iteration: true on llm-throttle's Wasm filter");
  }

  private enqueue(ticket: Ticket, decision: Decision, now: i64): Verdict {
    const slot = ticket.slot!;
    if (!joinQueue(ticket.rule, slot, now, this.root.holds)) return this.reject(ticket, decide(ticket, this.headersGone, true, now));
    this.phase = Phase.Waiting;
    this.waitingOn = ticket;
    this.waitSlot = slot;
    this.waitingSince = now;
    this.order = waitOrder(now, this.contextId);
    this.deadline = decision.deadline;
    this.lastCheck = ticket.check;
    this.root.waiting.push(this);
    incrementMetric(ticket.metrics.queued, 1);
    incrementMetric(ticket.metrics.waiting, 1);
    setFilterState(FACT_THROTTLE, "waiting:" + ticket.rule.name);
    return Verdict.Pause;
  }

  private reject(ticket: Ticket, decision: Decision): Verdict {
    const rule = ticket.rule;
    const check = decision.check!;
    const error = decision.error!;
    this.phase = Phase.Done;
    incrementMetric(ticket.metrics.rejected, 1);
    setFilterState(FACT_THROTTLE, "rejected:" + rule.name);
    const headers = new ResponseHeaders().add("content-type", "application/json");
    if (decision.retryAfterSeconds < 0) {
      // The openai SDKs honour this: retrying a request bigger than the budget cannot succeed.
      headers.add("x-should-retry", "false");
    } else {
      headers.add("retry-after", decision.retryAfterSeconds.toString());
    }
    if (this.root.config.responseHeaders) appendRateLimitHeaders(headers, rule, check);
    sendResponse(error.status, FILTER_NAME + "_" + DENY_NAMES[<i32>check.deny], errorBody(this.shape, error), headers);
    return Verdict.Stop;
  }

  // ---- waiting ----

  /** Which key's queue this request waits in. */
  waitKey(): string {
    const slot = this.waitSlot;
    return slot != null ? slot.key : "";
  }

  /** Called from the worker's tick: admits and resumes the request if it now fits. */
  retry(now: i64): bool {
    // Host calls from a tick act on the root context unless the stream is made current first.
    setEffectiveContext(this.contextId);
    const refused = this.claim(now, true);
    if (refused != null) {
      // A refusal for want of the turn says nothing about when the limits will have room.
      if (refused.check.deny != Deny.Waiting) this.lastCheck = refused.check;
      return false;
    }
    this.admitted(true);
    this.leaveWaiting(now);
    this.continueRequest();
    return true;
  }

  timeOut(now: i64): void {
    setEffectiveContext(this.contextId);
    const ticket = this.waitingOn!;
    this.leaveWaiting(now);
    incrementMetric(ticket.metrics.queueTimeouts, 1);
    this.reject(ticket, waitedTooLong(ticket.rule, this.lastCheck, now - this.waitingSince));
  }

  private leaveWaiting(now: i64): void {
    const ticket = this.waitingOn;
    const slot = this.waitSlot;
    if (ticket == null || slot == null) return;
    leaveQueue(slot, this.order, now, this.root.holds);
    incrementMetric(ticket.metrics.waiting, -1);
    this.waitingOn = null;
    this.waitSlot = null;
  }

  // ---- settling ----

  /** Runs once the stream is over, however it ended: completed, failed, reset or abandoned. */
  private end(): void {
    if (this.phase == Phase.Waiting) {
      // The client went away while its request waited: its place in the queue is freed.
      this.root.forget(this);
      this.leaveWaiting(nowMillis());
      this.phase = Phase.Done;
      return;
    }
    if (this.phase != Phase.Admitted) return;
    this.phase = Phase.Done;
    const now = nowMillis();
    const tracker = this.tracker;
    if (tracker != null) tracker.finish();
    const handedOver = this.usageHandedOver ? this.handedOverUsage() : null;
    for (let i = 0; i < this.tickets.length; i++) {
      const ticket = unchecked(this.tickets[i]);
      if (!ticket.taken) continue;
      const used = this.used(ticket, handedOver);
      settleRecord(ticket.rule, ticket.slot!, ticket.epoch, ticket.reserved, used, now, this.root.holds);
      ticket.taken = false;
      incrementMetric(ticket.metrics.inFlight, -1);
      incrementMetric(ticket.metrics.reserved, -ticket.reserved.total);
      incrementMetric(ticket.metrics.tokens, used.total);
    }
  }

  /**
   * What the request cost. A failed answer (no response, an error status) is not billed by the
   * providers, so it costs nothing; otherwise the response's usage, or for a stream cut short the
   * prompt plus the text that did arrive.
   */
  private used(ticket: Ticket, handedOver: UsageFigures | null): Reservation {
    if (this.status < 200 || this.status >= 300) return new Reservation();
    const tracker = this.tracker;
    const figures = tracker != null ? UsageFigures.of(tracker) : handedOver;
    if (this.opaque || figures == null) return ticket.reserved;
    const prompt = figures.promptTokens >= 0 ? figures.promptTokens : this.promptTokens;
    return new Reservation(prompt, figures.completionTokens);
  }

  /** The usage the metrics filter published; without it (never seen so far) the reservations stand. */
  private handedOverUsage(): UsageFigures | null {
    const figures = publishedUsage();
    if (figures == null) logger.warn(this.contextId, "llm-metrics announced the response's usage but published none; settling with the reservation");
    return figures;
  }

  private countsTokens(): bool {
    for (let i = 0; i < this.tickets.length; i++) if (unchecked(this.tickets[i]).rule.limits.countsTokens) return true;
    return false;
  }

  /** On an admitted response: the tightest rule's state, for the requests and for the tokens. */
  private addRateLimitHeaders(): void {
    let requests: Ticket | null = null;
    let tokens: Ticket | null = null;
    for (let i = 0; i < this.tickets.length; i++) {
      const ticket = unchecked(this.tickets[i]);
      const check = ticket.check;
      if (check.remainingRequests >= 0 && (requests == null || check.remainingRequests < requests.check.remainingRequests)) requests = ticket;
      if (check.remainingTokens >= 0 && (tokens == null || check.remainingTokens < tokens.check.remainingTokens)) tokens = ticket;
    }
    if (requests != null) {
      setResponseHeader("x-ratelimit-limit-requests", requests.rule.limits.requestsPerSecond.toString());
      setResponseHeader("x-ratelimit-remaining-requests", requests.check.remainingRequests.toString());
      setResponseHeader("x-ratelimit-reset-requests", formatDuration(requests.check.resetRequestsMs));
    }
    if (tokens != null) {
      setResponseHeader("x-ratelimit-limit-tokens", tokens.rule.limits.tokensPerMinute.toString());
      setResponseHeader("x-ratelimit-remaining-tokens", tokens.check.remainingTokens.toString());
      setResponseHeader("x-ratelimit-reset-tokens", formatDuration(tokens.check.resetTokensMs));
    }
  }
}

function appendRateLimitHeaders(headers: ResponseHeaders, rule: Rule, check: Check): void {
  if (check.remainingRequests >= 0) {
    headers.add("x-ratelimit-limit-requests", rule.limits.requestsPerSecond.toString());
    headers.add("x-ratelimit-remaining-requests", check.remainingRequests.toString());
    headers.add("x-ratelimit-reset-requests", formatDuration(check.resetRequestsMs));
  }
  if (check.remainingTokens >= 0) {
    headers.add("x-ratelimit-limit-tokens", rule.limits.tokensPerMinute.toString());
    headers.add("x-ratelimit-remaining-tokens", check.remainingTokens.toString());
    headers.add("x-ratelimit-reset-tokens", formatDuration(check.resetTokensMs));
  }
}

function headersVerdict(verdict: Verdict): FilterHeadersStatusValues {
  return verdict == Verdict.Continue ? FilterHeadersStatusValues.Continue : FilterHeadersStatusValues.StopIteration;
}

function bodyVerdict(verdict: Verdict): FilterDataStatusValues {
  if (verdict == Verdict.Continue) return FilterDataStatusValues.Continue;
  // A parked request keeps its body until it is resumed; a refused one has no use for it.
  return verdict == Verdict.Pause ? FilterDataStatusValues.StopIterationAndBuffer : FilterDataStatusValues.StopIterationNoBuffer;
}
