// The throttle filter's contexts: they gather what a request is (from the admission filter's facts,
// or from the body when that filter is not installed), ask store.ts and policy.ts whether it fits,
// and for a global rule the rate limit service too (global.ts; the request stays paused until it
// answers), carry out the answer (forward, refuse, park, redirect), and settle the account from the
// response.
import { ConfigErrors, ConfigObject } from "../json/config-reader";
import {
  StreamContext,
  FilterDataStatusValues,
  FilterHeadersStatusValues,
} from "../host/contexts";
import { BodyStep, FactsOrBodyStream } from "../llm/facts-or-body";
import { errorBody } from "../llm/api-errors";
import { defineCounter, defineGauge, grpcReceived, grpcStatusMessage, incrementMetric, Logger, responseBody, ResponseHeaders, sendResponse } from "../host/calls";
import {
  nowMillis, propertyString, removeRequestHeader, requestHeader, responseHeader, responseStatus, setEffectiveContext, setRequestHeader, setResponseHeader,
} from "../host/callback-cache";
import { setFilterState } from "../host/filter-state";
import { FACT_THROTTLE, FACT_THROTTLE_WAIT } from "../llm/filter-state-names";
import { OUTCOME_THROTTLED, setRefusal } from "../llm/outcome";
import { ApiShape, apiShapeForPath, LlmRequest, readLlmRequest, routedPath } from "../llm/request";
import { RequestFacts } from "../llm/request-facts";
import { UsageTracker } from "../llm/usage-tracker";
import { publishedUsage, UsageFigures, usageAnnounced } from "../llm/usage-handoff";
import { isShadowAuthority, ROUTE_FALLBACK, setRoute } from "../llm/route";
import { KeyHash } from "../text/key-hash";
import { TokenEstimator } from "../llm/tokens";
import { Action, FailureMode, KeyKind, readThrottleConfig, Rule, ThrottleConfig } from "./config";
import {
  Check, Choice, decide, Decision, Deny, DENY_NAMES, formatDuration, Reservation, reservationFor, RuleAnswer, tickPeriodMs, waitedTooLong, waitOrder,
} from "./policy";
import { admit, Asking, creditKey, Holds, joinQueue, leaveQueue, settleRecord, SlotRef, undoAdmission } from "./store";
import {
  Ask, askFor, Credit, Gate, GlobalAnswer, GlobalStep, globalKeyHex, Hits, hitsAsCredit, joinCredit, Outcome, overUse, tooLargeForService, underUse,
} from "./global-policy";
import { ANSWER_GRACE_MS, GlobalClient, GlobalMetrics } from "./global";
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
  /** A global rule's metrics about the rate limit service. */
  global: GlobalMetrics | null = null;

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
    if (rule.isGlobal) this.global = new GlobalMetrics(rule);
  }
}

/** A call to the rate limit service whose answer has not come: a request's reservation, or over-use being settled. */
class PendingCall {
  /** Given up on at the tick after its timeout: a late answer only settles what it counted. */
  expired: bool = false;

  constructor(
    public token: u32,
    public ask: Ask,
    public hits: Hits,
    public metrics: GlobalMetrics,
    public sentAt: i64,
    /** The request and its rule's part that asked; null for a settlement. */
    public stream: ThrottleStream | null,
    public ticket: Ticket | null,
  ) {}
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
  /** The rate limit service, when some rule has backend global. */
  global: GlobalClient | null = null;
  /** This root's calls to the service whose answer has not come, by token. */
  private calls: Map<u32, PendingCall> = new Map();

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
    const service = config.rateLimitService;
    this.global = config.asksService && service != null ? new GlobalClient(service, logger) : null;
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
    this.giveUpOnCalls(now);
    this.releaseWaiting(now);
    this.holds.renew(now);
    super.onTick();
  }

  // ---- calls to the rate limit service ----

  /** Asks the service for a rule's part of a request; the token, or a negative result when the call could not start. */
  ask(stream: ThrottleStream, ticket: Ticket, hits: Hits, now: i64): i64 {
    const client = this.global!;
    const ask = askFor(ticket.rule, ticket.keyHex, hits);
    const token = client.send(this, ask, now);
    const metrics = ticket.metrics.global!;
    if (token < 0) metrics.call(Outcome.Failure);
    else this.calls.set(<u32>token, new PendingCall(<u32>token, ask, hits, metrics, now, stream, ticket));
    return token;
  }

  /** Sends what a request used beyond its reservation, from the root: nothing waits for it. */
  settleOverUse(ticket: Ticket, hits: Hits, now: i64): void {
    const client = this.global!;
    const metrics = ticket.metrics.global!;
    const ask = askFor(ticket.rule, ticket.keyHex, hits);
    const token = client.gate(now) == Gate.Skip ? -1 : client.send(this, ask, now);
    if (token < 0) {
      incrementMetric(metrics.settleDropped, 1);
      return;
    }
    incrementMetric(metrics.settleCalls, 1);
    this.calls.set(<u32>token, new PendingCall(<u32>token, ask, hits, metrics, now, null, null));
  }

  onGrpcReceive(token: u32, messageSize: u32): void {
    const call = this.takeCall(token);
    if (call == null) return;
    const now = nowMillis();
    this.answered(call, this.global!.received(call.ask, grpcReceived(messageSize), now, this.contextId), now);
  }

  onGrpcClose(token: u32, status: u32): void {
    const call = this.takeCall(token);
    if (call == null) return;
    const now = nowMillis();
    this.answered(call, this.global!.closed(status, grpcStatusMessage(), now, this.contextId), now);
  }

  private takeCall(token: u32): PendingCall | null {
    if (!this.calls.has(token) || this.global == null) return null;
    const call = this.calls.get(token);
    this.calls.delete(token);
    return call;
  }

  private answered(call: PendingCall, answer: GlobalAnswer, now: i64): void {
    const metrics = call.metrics;
    if (answer.outcome == Outcome.OverLimit) incrementMetric(metrics.refusedTokens, call.hits.tokens);
    const ticket = call.ticket;
    const stream = call.stream;
    if (ticket == null || stream == null) {
      if (answer.outcome == Outcome.Failure) incrementMetric(metrics.settleDropped, 1);
      return;
    }
    // An expired call was counted as failed when given up on.
    if (!call.expired) metrics.call(answer.outcome);
    if (!call.expired && stream.awaits(ticket, call.token)) {
      stream.answered(ticket, answer, now);
      return;
    }
    // The request left, or went on without this answer: what the service counted becomes credit.
    if (answer.outcome == Outcome.Ok && ticket.slot != null) {
      incrementMetric(metrics.creditedTokens, creditKey(ticket.slot!, ticket.fingerprint, hitsAsCredit(call.hits, answer.creditUntil), now));
    }
  }

  /** Requests whose call has had no answer well past its timeout go on under their rule's on_service_failure. */
  private giveUpOnCalls(now: i64): void {
    const client = this.global;
    if (client == null || this.calls.size == 0) return;
    const late = now - client.config.timeoutMs - ANSWER_GRACE_MS;
    const calls = this.calls.values();
    for (let i = 0; i < calls.length; i++) {
      const call = unchecked(calls[i]);
      if (call.expired || call.sentAt > late) continue;
      call.expired = true;
      const stream = call.stream;
      const ticket = call.ticket;
      if (stream == null || ticket == null) continue;
      call.metrics.call(Outcome.Failure);
      const answer = client.unanswered(now, this.contextId);
      if (stream.awaits(ticket, call.token)) stream.answered(ticket, answer, now);
    }
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
  // ---- a global rule's part ----
  /** What the key's record did before asking: credit taken, what is left to ask for. */
  step: GlobalStep | null = null;
  /** The call asking for it is under way, with this token. */
  asking: bool = false;
  askToken: u32 = 0;
  /** The service counted the reservation (it answered OK, or the key's credit covered it): settling counts in it too. */
  counted: bool = false;
  /** Until when what the reservation does not use may be spent as credit. */
  creditUntil: i64 = 0;
  /** The rule refused the request once the service answered (or failed, under on_service_failure local or deny). */
  refused: bool = false;
  /** Taken under the rule's local share, the service having failed. */
  fellBack: bool = false;

  constructor(rule: Rule, public metrics: RuleMetrics, public fingerprint: i64, public keyHex: string, reserved: Reservation) {
    super(rule, reserved);
  }

  /** The credit it took from its key's record, handed back (it was not spent); empty from then on. */
  giveBackCredit(): Credit | null {
    const step = this.step;
    if (step == null) return null;
    const credit = step.taken;
    step.taken = new Credit();
    return credit;
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
  /** Paused until the rate limit service answers for its global rules. */
  Asking,
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
  /** Calls to the rate limit service under way for this request. */
  private pendingAsks: i32 = 0;
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
    if (this.phase == Phase.Waiting || this.phase == Phase.Asking) return FilterDataStatusValues.StopIterationAndBuffer;
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
    this.status = responseStatus();
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

  /** Whom the request counts against under this rule: its key's parts. */
  private keyParts(rule: Rule, model: string): string[] {
    const parts = new Array<string>(rule.key.length);
    for (let i = 0; i < rule.key.length; i++) {
      const source = unchecked(rule.key[i]);
      let part: string | null = "";
      if (source.kind == KeyKind.Header) part = this.header(source.header);
      else if (source.kind == KeyKind.Peer) part = propertyString(PEER_PROPERTY);
      else if (source.kind == KeyKind.Model) part = model;
      unchecked((parts[i] = part != null ? part : ABSENT));
    }
    return parts;
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
      const parts = this.keyParts(rule, model);
      const hash = new KeyHash().add(rule.name);
      for (let j = 0; j < parts.length; j++) hash.add(unchecked(parts[j]));
      this.tickets.push(new Ticket(rule, unchecked(this.root.metrics[i]), hash.fingerprint(), rule.isGlobal ? globalKeyHex(parts) : "", reservation));
    }
    if (this.tickets.length == 0) {
      this.phase = Phase.Done;
      return Verdict.Continue;
    }
    const now = nowMillis();
    const refused = this.claim(now, false);
    if (refused == null && this.pendingAsks > 0) {
      this.phase = Phase.Asking;
      return Verdict.Pause;
    }
    return this.carryOut(refused, now);
  }

  /** What the policy makes of the limiters' answers, carried out: `refused` is the first rule without room, null when all had. */
  private carryOut(refused: Ticket | null, now: i64): Verdict {
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
        if (refused!.rule.action == Action.Redirect && refused!.check.deny != Deny.Unavailable) this.warnRedirectTooLate(refused!);
        return this.reject(refused!, decision);
    }
  }

  /**
   * Takes each matching rule's reservation; all must have room, or none keeps what it took. Returns
   * the first rule without room, or null when the request was admitted by all.
   */
  private claim(now: i64, fromQueue: bool): Ticket | null {
    const asks: Ticket[] = [];
    for (let i = 0; i < this.tickets.length; i++) {
      const ticket = unchecked(this.tickets[i]);
      ticket.step = null;
      ticket.counted = false;
      ticket.refused = false;
      ticket.fellBack = false;
      const rule = ticket.rule;
      if (rule.isGlobal && tooLargeForService(rule, ticket.reserved)) {
        // Asking would only add to the counter a reservation no window can hold.
        ticket.check = new Check();
        ticket.check.deny = Deny.TooLarge;
        this.undo(i, now);
        return ticket;
      }
      const result = admit(rule, ticket.fingerprint, ticket.slot, ticket.reserved, now, this.asking(ticket, fromQueue, false), this.root.holds);
      if (ticket.slot == null && result.slot.shared) {
        incrementMetric(ticket.metrics.sharedSlots, 1);
        logger.warn(this.contextId, "rule " + rule.name + ": every key slot this key may use is held by another active key; raise key_slots (now " + rule.keySlots.toString() + ")");
      }
      ticket.slot = result.slot;
      ticket.check = result.check;
      const step = result.step;
      ticket.step = step;
      if (!result.admitted) {
        if (step != null && step.cached != null) incrementMetric(ticket.metrics.global!.cachedDenials, 1);
        this.undo(i, now);
        return ticket;
      }
      ticket.taken = true;
      ticket.epoch = result.epoch;
      if (step == null) continue;
      if (step.hits.empty) {
        // The key's credit covers the request: the service counted it already.
        this.counted(ticket, step.taken.until);
        continue;
      }
      asks.push(ticket);
    }
    // Asked only once every rule has room here: a request refused anyway spends nothing in the service.
    for (let i = 0; i < asks.length; i++) {
      const ticket = unchecked(asks[i]);
      if (this.ask(ticket, now)) continue;
      this.fallBack(ticket, now, fromQueue);
      if (ticket.refused) {
        this.undo(this.tickets.length, now);
        return ticket;
      }
    }
    return null;
  }

  private asking(ticket: Ticket, fromQueue: bool, fallback: bool): Asking {
    return fromQueue
      ? new Asking(false, ticket == this.waitingOn ? this.order : 0, this.root.staleTurnMs(), fallback)
      : new Asking(ticket.rule.action == Action.Queue, 0, 0, fallback);
  }

  /** Sends a global rule's call; false when the circuit is open or the call could not start. */
  private ask(ticket: Ticket, now: i64): bool {
    if (this.root.global!.gate(now) == Gate.Skip) return false;
    const token = this.root.ask(this, ticket, ticket.step!.hits, now);
    if (token < 0) return false;
    ticket.asking = true;
    ticket.askToken = <u32>token;
    this.pendingAsks++;
    return true;
  }

  /** The service counted the ticket's reservation; what it does not use may be spent until `until`. */
  private counted(ticket: Ticket, until: i64): void {
    ticket.counted = true;
    ticket.creditUntil = until;
    incrementMetric(ticket.metrics.global!.creditSpentTokens, ticket.step!.taken.tokens);
  }

  /** Whether the answer to call `token` is what the request waits for. */
  awaits(ticket: Ticket, token: u32): bool {
    return ticket.asking && ticket.askToken == token;
  }

  /** The service's answer (or failure) for a global rule's part; the request goes on once every rule's is in. */
  answered(ticket: Ticket, answer: GlobalAnswer, now: i64): void {
    // Host calls from the root's callback act on the root unless the stream is made current first.
    setEffectiveContext(this.contextId);
    ticket.asking = false;
    this.pendingAsks--;
    if (answer.outcome == Outcome.Ok) {
      const taken = ticket.step!.taken;
      const until = answer.creditUntil == 0 ? taken.until : taken.empty ? answer.creditUntil : min<i64>(taken.until, answer.creditUntil);
      ticket.check = answer.check;
      this.counted(ticket, until);
    } else if (answer.outcome == Outcome.OverLimit) {
      undoAdmission(ticket.rule, ticket.slot!, ticket.epoch, ticket.reserved, now, this.root.holds, ticket.giveBackCredit(), answer.check.deny, answer.overUntil);
      ticket.taken = false;
      ticket.check = answer.check;
      ticket.refused = true;
    } else {
      this.fallBack(ticket, now, this.phase == Phase.Waiting);
    }
    if (this.pendingAsks > 0) return;
    let refused: Ticket | null = null;
    for (let i = 0; i < this.tickets.length && refused == null; i++) if (unchecked(this.tickets[i]).refused) refused = unchecked(this.tickets[i]);
    if (refused != null) this.undo(this.tickets.length, now);
    if (this.phase == Phase.Waiting) {
      // A queued request's retry: admitted now, or waiting on.
      if (refused != null) {
        if (refused.check.deny != Deny.Waiting) this.lastCheck = refused.check;
        return;
      }
      this.root.forget(this);
      this.admitted(true);
      this.leaveWaiting(now);
      this.continueRequest();
      return;
    }
    if (this.carryOut(refused, now) == Verdict.Continue) this.continueRequest();
  }

  /**
   * The service did not answer for a ticket: its rule's on_service_failure decides. "allow" lets the
   * request go on uncounted, "deny" refuses it (503), "local" counts it in this Envoy's record at
   * local_share of the rule's limits, which may refuse it like a local rule.
   */
  private fallBack(ticket: Ticket, now: i64, fromQueue: bool): void {
    const rule = ticket.rule;
    ticket.metrics.global!.fallback(rule);
    if (rule.onServiceFailure == FailureMode.Allow) {
      const credit = ticket.giveBackCredit();
      if (credit != null) creditKey(ticket.slot!, ticket.fingerprint, credit, now);
      return;
    }
    undoAdmission(rule, ticket.slot!, ticket.epoch, ticket.reserved, now, this.root.holds, ticket.giveBackCredit());
    ticket.taken = false;
    if (rule.onServiceFailure == FailureMode.Deny) {
      ticket.check = new Check();
      ticket.check.deny = Deny.Unavailable;
      ticket.check.retryAfterMs = this.root.global!.retryAfterMs(now);
      ticket.refused = true;
      return;
    }
    const result = admit(rule, ticket.fingerprint, ticket.slot, ticket.reserved, now, this.asking(ticket, fromQueue, true), this.root.holds);
    ticket.slot = result.slot;
    ticket.check = result.check;
    if (!result.admitted) {
      ticket.refused = true;
      return;
    }
    ticket.taken = true;
    ticket.fellBack = true;
    ticket.epoch = result.epoch;
  }

  /**
   * Takes back what the first `count` tickets hold: their place and reservation here, the credit
   * they took, and for a reservation the service counted, all of it as credit (the request will use
   * none). A call still under way is no longer waited for: its answer only settles what it counted.
   */
  private undo(count: i32, now: i64): void {
    for (let i = 0; i < count; i++) {
      const ticket = unchecked(this.tickets[i]);
      if (ticket.asking) {
        ticket.asking = false;
        this.pendingAsks--;
      }
      if (!ticket.taken) continue;
      let credit = ticket.giveBackCredit();
      const step = ticket.step;
      if (ticket.counted && step != null) credit = joinCredit(credit!, hitsAsCredit(step.hits, ticket.creditUntil));
      const kept = undoAdmission(ticket.rule, ticket.slot!, ticket.epoch, ticket.reserved, now, this.root.holds, credit);
      if (ticket.counted) incrementMetric(ticket.metrics.global!.creditedTokens, kept);
      ticket.taken = false;
      ticket.counted = false;
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
    setFilterState(FACT_THROTTLE, afterWait ? "admitted_after_wait" : "admitted", this.root.config.filterState);
  }

  private redirect(ticket: Ticket): Verdict {
    const rule = ticket.rule;
    // Envoy picks the route again by itself when a Wasm filter changes a request header (and has no
    // proxy_clear_route_cache import to ask for it: a module importing it does not load).
    setRequestHeader(rule.redirectHeader, rule.redirectValue);
    setRoute(ROUTE_FALLBACK);
    incrementMetric(ticket.metrics.redirected, 1);
    setFilterState(FACT_THROTTLE, "redirected:" + rule.name, this.root.config.filterState);
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
    setFilterState(FACT_THROTTLE, "waiting:" + ticket.rule.name, this.root.config.filterState);
    return Verdict.Pause;
  }

  private reject(ticket: Ticket, decision: Decision): Verdict {
    const rule = ticket.rule;
    const check = decision.check!;
    const error = decision.error!;
    this.phase = Phase.Done;
    incrementMetric(ticket.metrics.rejected, 1);
    setRefusal(FACT_THROTTLE, "rejected:" + rule.name, OUTCOME_THROTTLED, this.root.config.filterState);
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

  /**
   * Called from the worker's tick: admits and resumes the request if it now fits. A global rule's
   * retry asks the service (once the window it was over in has reset), and the request is admitted
   * when the answer comes.
   */
  retry(now: i64): bool {
    if (this.pendingAsks > 0) return false;
    // Host calls from a tick act on the root context unless the stream is made current first.
    setEffectiveContext(this.contextId);
    const refused = this.claim(now, true);
    if (refused != null) {
      // A refusal for want of the turn says nothing about when the limits will have room.
      if (refused.check.deny != Deny.Waiting) this.lastCheck = refused.check;
      return false;
    }
    if (this.pendingAsks > 0) return false;
    this.admitted(true);
    // For the access log and the trace span, whose duration holds the wait but not which part it was.
    setFilterState(FACT_THROTTLE_WAIT, (now - this.waitingSince).toString(), this.root.config.filterState);
    this.leaveWaiting(now);
    this.continueRequest();
    return true;
  }

  timeOut(now: i64): void {
    setEffectiveContext(this.contextId);
    const ticket = this.waitingOn!;
    this.undo(this.tickets.length, now);
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
    if (this.phase == Phase.Waiting || this.phase == Phase.Asking) {
      // The client went away while its request waited: its place in the queue is freed.
      const now = nowMillis();
      this.root.forget(this);
      this.undo(this.tickets.length, now);
      this.leaveWaiting(now);
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
      let credit: Credit | null = null;
      if (ticket.counted) {
        credit = underUse(ticket.rule, ticket.reserved, used, ticket.creditUntil);
        const over = overUse(ticket.rule, ticket.reserved, used);
        if (!over.empty) this.root.settleOverUse(ticket, over, now);
      }
      const kept = settleRecord(ticket.rule, ticket.slot!, ticket.epoch, ticket.reserved, used, now, this.root.holds, credit);
      if (ticket.counted) incrementMetric(ticket.metrics.global!.creditedTokens, kept);
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
