// The router's contexts: they gather what a request says (headers, the model from the admission
// filter's facts or from the body), ask policy.ts where it goes, and carry that out with the
// routing header. At the end of each request they feed the target's guard
// and, when asked, write the comparison record.
import { ConfigErrors, ConfigObject } from "../json/config-reader";
import {
  StreamContext,
  FilterDataStatusValues,
  FilterHeadersStatusValues,
} from "../host/contexts";
import { BodyStep, FactsOrBodyStream } from "../llm/facts-or-body";
import { defineCounter, incrementMetric, Logger, replaceRequestBody, requestBody, responseBody } from "../host/calls";
import { filterState, setFilterState } from "../host/filter-state";
import { FACT_RECORD, FACT_ROUTE, FACT_ROUTER } from "../llm/filter-state-names";
import { nowMillis, nowNanos, removeRequestHeader, requestHeader, responseHeader, setRequestHeader } from "../host/callback-cache";
import { ResponseEnding } from "../host/response-ending";
import { apiShapeForPath, ApiShape } from "../llm/request";
import { TaggedName } from "../telemetry/metric-names";
import { isModelListRequest, publishRouterModels } from "../llm/models-api";
import { headerSafe } from "../llm/request-facts";
import { UsageTracker } from "../llm/usage-tracker";
import { isShadowRequest, ROUTE_SHADOW, setRoute } from "../llm/route";
import { stableHash } from "../text/stable-hash";
import { findModelField, withModel } from "./body";
import { readRouterConfig, RouterConfig } from "./config";
import { Sample, SampleResult } from "./guard";
import { recordSample, SharedHealth } from "./guard-state";
import { decide, Decision, RequestView, RouteInput, Verdict, verdictOf } from "./policy";
import { AnswerTracker, ComparisonRecord } from "./record";
import { HeaderHold, HoldingRoot } from "../host/header-hold";

export const FILTER_NAME = "llm-router";

/** Counter per target: requests routed there (after guards). */
export const METRIC_REQUESTS = "llm_router_requests_total";
/** Counter per target: times its guard tripped. */
export const METRIC_GUARD_TRIPS = "llm_router_guard_trips_total";
/** Counter: requests whose headers waited for the body, let go without it (host/hold-rules.ts). */
export const METRIC_HOLD_TIMEOUTS = "llm_router_hold_headers_timeouts_total";
export const LABEL_TARGET = "llm_target";

const GOLDEN_GAMMA: u64 = 0x9e3779b97f4a7c15;

const logger = new Logger(FILTER_NAME);

class HostRequest extends RequestView {
  header(name: string): string | null {
    return requestHeader(name);
  }
}

const hostRequest = new HostRequest();

/** Logged once per root when Envoy is seen keeping a held request's body from this filter. */
const HOLD_WARNING =
  "the router held the request headers to read the model from the body (llm-admission's facts did not come with them), but Envoy does not " +
  "hand this filter the body of a request whose headers it holds: this worker now routes such requests without their model (rules matching " +
  "models do not apply, no model header; rewrite_model still rewrites the body); set allow_on_headers_stop_iteration: true on llm-router's " +
  "Wasm filter, or have llm-admission hold the headers (hold_headers: true, with the flag on its Wasm filter) so that its facts come with them";

export class RouterRoot extends HoldingRoot {
  config: RouterConfig = new RouterConfig();
  /** Metric ids by target index; -1 (a no-op) for the trips of a target without a guard. */
  requestsMetric: i32[] = [];
  tripsMetric: i32[] = [];
  private draws: u64 = 0;

  constructor(contextId: u32) {
    super(contextId, new HeaderHold(logger, METRIC_HOLD_TIMEOUTS, HOLD_WARNING));
  }

  createContext(contextId: u32): StreamContext {
    return new RouterStream(contextId, this);
  }

  configure(source: ConfigObject, errors: ConfigErrors): void {
    const parsed = readRouterConfig(source, errors);
    if (parsed.config == null) return;
    const config = parsed.config!;
    this.config = config;
    this.requestsMetric = [];
    this.tripsMetric = [];
    for (let i = 0; i < config.targets.length; i++) {
      const target = unchecked(config.targets[i]);
      this.requestsMetric.push(defineCounter(new TaggedName(METRIC_REQUESTS).tag(LABEL_TARGET, target.name).toString()));
      this.tripsMetric.push(target.guard != null ? defineCounter(new TaggedName(METRIC_GUARD_TRIPS).tag(LABEL_TARGET, target.name).toString()) : -1);
    }
    this.hold.configure(config.holdHeadersTimeoutMs, config.mayHoldHeaders);
  }

  /**
   * Bits for a split without a sticky key. Not Math.random (it would need a seed import Envoy lacks);
   * not the request id alone either, which a client may be able to choose.
   */
  entropy(requestId: string | null): u64 {
    this.draws++;
    const fromId = requestId != null ? stableHash(requestId) : 0;
    return nowNanos() ^ (this.draws * GOLDEN_GAMMA) ^ fromId;
  }
}

enum Waiting {
  Nothing = 0,
  /** For the body's model, to decide. */
  Decision,
  /** For the body, to rewrite its model; the decision is made. */
  Rewrite,
}

export class RouterStream extends FactsOrBodyStream {
  private waiting: Waiting = Waiting.Nothing;
  private llm: bool = false;
  private shadow: bool = false;
  private clientRoute: string | null = null;
  /** The model the client asked for; "" while unknown. */
  private model: string = "";
  /** The model sent upstream when this side rewrote it. */
  private upstreamModel: string = "";
  private rewriteTo: string = "";
  private decision: Decision | null = null;
  /** The guard epoch the request was routed in, for its sample; -1 when its target has no guard. */
  private epoch: i64 = -1;
  private startMs: i64 = 0;
  private answeredAtMs: i64 = -1;
  private tracker: AnswerTracker | null = null;
  /** Followed only when the guard or the record judges the response (judgesResponse). */
  private response: ResponseEnding = new ResponseEnding();

  constructor(contextId: u32, private root: RouterRoot) {
    super(contextId, root, root.hold);
  }

  onRequestHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    const config = this.root.config;
    // Removed before anything reads it, whoever routes the request: only a rule that trusts the
    // client gets to see it.
    this.clientRoute = requestHeader(config.routeHeader);
    if (this.clientRoute != null) removeRequestHeader(config.routeHeader);
    if (config.modelHeader.length > 0) removeRequestHeader(config.modelHeader);
    // The model list is answered by admission, which sees the answer after this filter: it keeps
    // the names that exist only behind the router out of it.
    if (isModelListRequest(requestHeader(":method"), requestHeader(":path"))) publishRouterModels(config.rewriteModels());
    // An earlier llm-mesh filter already chose the way (the throttle's redirect to a fallback): its
    // choice stands, and the targets here neither serve nor answer for it.
    const earlier = filterState(FACT_ROUTE);
    if (earlier != null && earlier.length > 0) {
      setFilterState(FACT_ROUTER, "target=" + earlier + " by=earlier-filter", config.filterState);
      return FilterHeadersStatusValues.Continue;
    }
    this.startMs = nowMillis();

    const facts = this.earlierFacts();
    if (facts != null) {
      this.llm = facts.shape != ApiShape.Unknown;
      this.model = facts.model;
    } else {
      const method = requestHeader(":method");
      const path = requestHeader(":path");
      this.llm = method != null && method == "POST" && path != null && apiShapeForPath(path) != ApiShape.Unknown;
    }

    if (isShadowRequest()) {
      this.shadow = true;
      setRoute(ROUTE_SHADOW, config.filterState);
      setFilterState(FACT_ROUTER, "target=" + ROUTE_SHADOW, config.filterState);
      this.rewriteTo = config.shadowRewriteModel;
      return this.afterDecision(endOfStream);
    }
    if (facts == null && this.llm && config.needsModel && !endOfStream) return this.hold(Waiting.Decision);
    this.route();
    return this.afterDecision(endOfStream);
  }

  onRequestBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    if (this.waiting == Waiting.Nothing) return FilterDataStatusValues.Continue;
    const config = this.root.config;
    const step = this.bodyStep(bodyBufferLength, endOfStream, config.maxBodyBytes);
    if (step == BodyStep.Buffer) return FilterDataStatusValues.StopIterationAndBuffer;
    const facts = this.facts;
    if (step == BodyStep.OverLimit) {
      // Documented pass-through: a body this large is not read, so not rewritten, and routed on the
      // model only an earlier filter's facts can give.
      logger.debug(this.contextId, "body over max_body_bytes (" + config.maxBodyBytes.toString() + "): " + (facts != null ? "routing on an earlier filter's facts" : "routing without its model"));
      if (this.waiting == Waiting.Decision) {
        if (facts != null) this.model = facts.model;
        this.route();
      }
      this.liftModel(this.model);
      this.waiting = Waiting.Nothing;
      return FilterDataStatusValues.Continue;
    }

    const body = requestBody(0, <u32>bodyBufferLength);
    const field = findModelField(body);
    if (this.waiting == Waiting.Decision) {
      this.model = facts != null ? facts.model : field.model;
      this.route();
    }
    let upstream = this.model;
    const rewriteTo = this.rewriteTo;
    if (rewriteTo.length > 0 && field.found) {
      if (field.model != rewriteTo) {
        const rewritten = withModel(body, field, rewriteTo);
        replaceRequestBody(<u32>bodyBufferLength, rewritten);
        // Held headers can still declare the true length; headers that went first declare none (headersGoFirst).
        if (!this.headersGone && requestHeader("content-length") != null) setRequestHeader("content-length", rewritten.length.toString());
      }
      upstream = rewriteTo;
      this.upstreamModel = rewriteTo;
    } else if (rewriteTo.length > 0) {
      logger.debug(this.contextId, "model not rewritten: " + field.problem);
    }
    this.liftModel(upstream);
    this.waiting = Waiting.Nothing;
    return FilterDataStatusValues.Continue;
  }

  onResponseHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    if (!this.judgesResponse()) return FilterHeadersStatusValues.Continue;
    this.response.headersPassed(endOfStream);
    // The guard's latency sample ends at the answer's first byte.
    if (this.epoch >= 0) this.answeredAtMs = nowMillis();
    const record = this.root.config.record;
    if (record.enabled && this.llm) {
      this.tracker = new AnswerTracker(UsageTracker.isEventStream(responseHeader("content-type")), record.previewChars);
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    if (!this.judgesResponse()) return FilterDataStatusValues.Continue;
    this.response.bodyPassed(endOfStream);
    const tracker = this.tracker;
    if (tracker == null) return FilterDataStatusValues.Continue;
    if (bodyBufferLength > 0) tracker.onChunk(responseBody(0, <u32>bodyBufferLength), nowMillis());
    if (endOfStream) tracker.finish();
    return FilterDataStatusValues.Continue;
  }

  onLog(): void {
    if (!this.judgesResponse()) return;
    const endMs = nowMillis();
    const status = this.response.status();
    const decision = this.decision;
    if (decision != null && this.epoch >= 0) {
      const verdict = verdictOf(status, this.response.details());
      const latency = (this.answeredAtMs >= 0 ? this.answeredAtMs : endMs) - this.startMs;
      if (verdict != Verdict.Unjudged) this.guard(decision, new Sample(this.epoch, latency, verdict == Verdict.Failed));
    }
    if (this.root.config.record.enabled && this.llm) this.writeRecord(status, endMs - this.startMs);
  }

  /** Whether the response feeds the chosen target's guard or the comparison record. */
  private judgesResponse(): bool {
    if (this.decision == null && !this.shadow) return false;
    return (this.decision != null && this.epoch >= 0) || (this.root.config.record.enabled && this.llm);
  }

  private hold(waiting: Waiting): FilterHeadersStatusValues {
    this.waiting = waiting;
    return this.awaitBody();
  }

  /**
   * The headers go upstream before the body is read, and Envoy's router picks the route from them: a
   * decision waiting for the model is made without it, and a model rewrite still to come drops the
   * length the headers declare, which it would make wrong.
   */
  protected headersGoFirst(): void {
    if (this.waiting == Waiting.Decision) {
      this.route();
      this.waiting = this.rewriteTo.length > 0 ? Waiting.Rewrite : Waiting.Nothing;
    }
    if (this.waiting == Waiting.Rewrite) removeRequestHeader("content-length");
  }

  /** With the decision made: hold the headers for a body rewrite, or copy the model now and go. */
  private afterDecision(endOfStream: bool): FilterHeadersStatusValues {
    if (this.rewriteTo.length > 0 && this.llm && !endOfStream && this.model != this.rewriteTo) return this.hold(Waiting.Rewrite);
    this.liftModel(this.rewriteTo.length > 0 && this.model.length > 0 ? this.rewriteTo : this.model);
    return FilterHeadersStatusValues.Continue;
  }

  private route(): void {
    const root = this.root;
    const config = root.config;
    const input = new RouteInput();
    input.clientRoute = this.clientRoute;
    input.model = this.model;
    input.random = root.entropy(requestHeader("x-request-id"));
    const health = new SharedHealth();
    const decision = decide(config, hostRequest, input, health);
    this.decision = decision;
    const target = decision.target;
    if (target.guard != null) this.epoch = health.epoch;
    if (health.reopened) {
      logger.info(this.contextId, "guard of target \"" + decision.chosen.name + "\": cool-down over, sending it traffic again");
    }
    // Envoy picks the route again by itself when a Wasm filter changes a request header
    // (test/router.test.ts routes on this header).
    setRequestHeader(config.routeHeader, target.name);
    setRoute(target.name, config.filterState);
    setFilterState(FACT_ROUTER, decision.describe(), config.filterState);
    if (target.index < root.requestsMetric.length) incrementMetric(unchecked(root.requestsMetric[target.index]), 1);
    this.rewriteTo = target.rewriteModel;
  }

  private liftModel(model: string): void {
    const header = this.root.config.modelHeader;
    if (header.length > 0 && model.length > 0 && !this.headersGone) setRequestHeader(header, headerSafe(model));
  }

  private guard(decision: Decision, sample: Sample): void {
    const target = decision.target;
    const outcome = recordSample(target, sample);
    if (outcome.result != SampleResult.Tripped) return;
    const config = this.root.config;
    logger.warn(this.contextId, "guard of target \"" + target.name + "\" tripped: " + outcome.reason +
      "; sending its traffic to \"" + config.primary.name + "\" for " + target.guard!.cooldownMs.toString() + " ms");
    if (target.index < this.root.tripsMetric.length) incrementMetric(unchecked(this.root.tripsMetric[target.index]), 1);
  }

  private writeRecord(status: i64, latencyMs: i64): void {
    const tracker = this.tracker;
    if (tracker != null) tracker.finish();
    const record = new ComparisonRecord();
    const requestId = requestHeader("x-request-id");
    record.requestId = requestId != null ? requestId : "";
    const decision = this.decision;
    record.side = decision != null ? decision.target.name : ROUTE_SHADOW;
    record.model = this.model;
    record.upstreamModel = this.upstreamModel;
    record.status = status;
    record.latencyMs = latencyMs;
    record.tracker = tracker;
    const json = record.toJson();
    setFilterState(FACT_RECORD, json);
    if (this.root.config.record.log) logger.info(this.contextId, "record " + json);
  }
}
