// The metrics filter's contexts: they note what a request is when it starts, follow the response
// for usage and the first token, and account for the request once it ends (onLog runs for every
// stream, including those an earlier filter answered itself). The request record is written as soon
// as the response is through, for the trace span, which Envoy ends before onLog.
import { ConfigErrors, ConfigObject } from "../json/config-reader";
import {
  StreamContext,
  FilterDataStatusValues,
  FilterHeadersStatusValues,
  RootContext,
} from "../host/contexts";
import { BodyStep, FactsOrBodyStream } from "../llm/facts-or-body";
import { filterState, setFilterState } from "../host/filter-state";
import {
  FACT_ADMISSION, FACT_THROTTLE, RECORD_FINISH_REASONS, RECORD_OUTCOME, RECORD_RESPONSE_MODEL, RECORD_TENANT, RECORD_TTFT,
  RECORD_USAGE_COMPLETION, RECORD_USAGE_PROMPT, RECORD_USAGE_SOURCE,
} from "../llm/filter-state-names";
import { incrementMetric, Logger, responseBody } from "../host/calls";
import { nowMillis, propertyInt, requestHeader, responseHeader } from "../host/callback-cache";
import { ResponseEnding } from "../host/response-ending";
import { ApiShape, apiShapeForPath, apiShapeName } from "../llm/request";
import { LabelSlots } from "../telemetry/metric-labels";
import { LABEL_NONE } from "../telemetry/metric-names";
import { MetricTable, NO_METRIC } from "../telemetry/metric-table";
import { ModelsCall, ModelsRequest, readModelsRequest } from "../llm/models-api";
import { RequestFacts } from "../llm/request-facts";
import { UsageTracker } from "../llm/usage-tracker";
import { announceUsage, publishUsage } from "../llm/usage-handoff";
import { currentRoute, isShadowRequest, ROUTE_SHADOW } from "../llm/route";
import { hex64, stableHash } from "../text/stable-hash";
import { TokenEstimator } from "../llm/tokens";
import { MetricsConfig, readMetricsConfig } from "./config";
import { activeRequestsName, AnswerFigures, answerFigures, Ending, outcomeOf, RequestLabels, Series, statusClass, timePerOutputToken, wasServed } from "./policy";
import { LabelSeries, SeriesCache } from "./series";

export const FILTER_NAME = "llm-metrics";

// Shared-data keys of the label slots (prefixed by plugin: Istio shares one namespace).
const MODEL_SLOTS_KEY = "llm-metrics:label-slots:model";
const TENANT_SLOTS_KEY = "llm-metrics:label-slots:tenant";

const logger = new Logger(FILTER_NAME);

export class MetricsRoot extends RootContext {
  config: MetricsConfig = new MetricsConfig();
  /** One estimator per worker: requests on a worker run one callback at a time. */
  estimator: TokenEstimator = new TokenEstimator();
  series: MetricTable = new MetricTable(0);
  labelSeries: SeriesCache = new SeriesCache(this.series);
  /** The in-flight gauge's id per request-model label. */
  private activeIds: Map<string, i32> = new Map<string, i32>();
  models: LabelSlots = new LabelSlots(MODEL_SLOTS_KEY, 0);
  tenants: LabelSlots = new LabelSlots(TENANT_SLOTS_KEY, 0);
  private warnedDropped: bool = false;

  createContext(contextId: u32): StreamContext {
    return new MetricsStream(contextId, this);
  }

  configure(source: ConfigObject, errors: ConfigErrors): void {
    const parsed = readMetricsConfig(source, errors);
    if (parsed.config == null) return;
    const config = parsed.config!;
    this.config = config;
    // Metric ids stay valid for the life of the VM: a new config keeps them and only moves the cap.
    this.series.limit = config.maxSeries;
    this.series.defineDropped();
    if (this.models.limit != config.maxModels) this.models = new LabelSlots(MODEL_SLOTS_KEY, config.maxModels);
    if (this.tenants.limit != config.maxTenants) this.tenants = new LabelSlots(TENANT_SLOTS_KEY, config.maxTenants);
  }

  /** The label for a model: its configured name or pattern, a slot, or `other`. */
  modelLabel(model: string, mayAdd: bool): string {
    if (model.length == 0) return LABEL_NONE;
    const configured = this.config.configuredLabel(model);
    if (configured != null) return configured;
    return this.models.label(model, mayAdd);
  }

  /** The in-flight gauge of a request-model label; the ids are kept, the label values are bounded. */
  activeGauge(modelLabel: string): i32 {
    if (this.activeIds.has(modelLabel)) return this.activeIds.get(modelLabel);
    const id = this.series.gauge(activeRequestsName(modelLabel));
    // Past max_series the table is asked again, so that it counts each dropped update.
    if (id != NO_METRIC) this.activeIds.set(modelLabel, id);
    return id;
  }

  warnIfDropping(contextId: u32): void {
    if (this.warnedDropped || this.series.dropped == 0) return;
    this.warnedDropped = true;
    logger.warn(contextId, "this worker reached max_series (" + this.series.limit.toString() + " metric series); new label combinations are not recorded (counted in llm_mesh_metric_series_dropped_total): raise max_series or lower max_models/max_tenants");
  }
}

export class MetricsStream extends FactsOrBodyStream {
  /** Whether this is an LLM API request; decided once, from the headers. */
  private classified: bool = false;
  private llm: bool = false;
  /** A mirrored copy (route.ts), told by the authority it arrived with. */
  private shadow: bool = false;
  private shape: ApiShape = ApiShape.Unknown;
  private startMs: i64 = 0;
  private readingBody: bool = false;
  private activeId: i32 = NO_METRIC;
  private tracker: UsageTracker | null = null;
  /** A model list or model request: counted under its own API, with no body or usage to read. */
  private models: ModelsRequest | null = null;
  /** Set once the request is over (end()). */
  private ended: bool = false;
  private status: i64 = 0;
  private outcome: string = "";
  private figures: AnswerFigures = new AnswerFigures();
  private response: ResponseEnding = new ResponseEnding();

  constructor(contextId: u32, private root: MetricsRoot) {
    // The body is read as it passes: the headers are never held for it.
    super(contextId, root, null);
  }

  onRequestHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    this.classify();
    if (!this.llm) return FilterHeadersStatusValues.Continue;
    if (this.facts == null && !endOfStream && this.root.config.readBody) {
      const declared = requestHeader("content-length");
      this.readingBody = declared == null || declared.length == 0 || I64.parseInt(declared) <= this.root.config.maxBodyBytes;
    }
    if (!this.readingBody) this.startActive();
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    if (!this.readingBody) return FilterDataStatusValues.Continue;
    const step = this.bodyStep(bodyBufferLength, endOfStream, this.root.config.maxBodyBytes);
    if (step == BodyStep.Buffer) return FilterDataStatusValues.StopIterationAndBuffer;
    // Past the limit, or not a well-formed request, a body gives no facts.
    if (this.facts == null && step == BodyStep.Whole) {
      const request = this.readRequest(bodyBufferLength, this.shape, this.root.estimator);
      if (request.ok) {
        const facts = RequestFacts.fromRequest(request);
        // No earlier llm-mesh filter published facts; later ones (and the access log) get them from here.
        facts.publish(false);
        this.facts = facts;
      }
    }
    this.readingBody = false;
    this.startActive();
    return FilterDataStatusValues.Continue;
  }

  onResponseHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    if (!this.llm) return FilterHeadersStatusValues.Continue;
    this.response.headersPassed(endOfStream);
    if (this.models == null) {
      const tracker = new UsageTracker(UsageTracker.isEventStream(responseHeader("content-type")));
      this.tracker = tracker;
      // The throttle filter sees the response after this one and takes the usage from here.
      announceUsage(tracker);
    }
    if (endOfStream) this.end();
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    this.response.bodyPassed(endOfStream);
    const tracker = this.tracker;
    if (tracker == null) {
      if (endOfStream && this.llm) this.end();
      return FilterDataStatusValues.Continue;
    }
    // Content times are a streaming measure: a JSON answer's text arrives all at once.
    if (bodyBufferLength > 0) tracker.onChunk(responseBody(0, <u32>bodyBufferLength), tracker.stream ? nowMillis() : 0);
    if (endOfStream) this.end();
    return FilterDataStatusValues.Continue;
  }

  onLog(): void {
    // A stream answered by an earlier filter never reached onRequestHeaders here.
    this.classify();
    if (!this.llm) return;
    const root = this.root;
    const config = root.config;
    const endMs = nowMillis();
    this.end();
    const outcome = this.outcome;
    const served = wasServed(outcome, this.status);

    const tracker = this.tracker;
    if (tracker != null) publishUsage(tracker);
    const requested = this.requestedModel();
    const answered = tracker != null ? tracker.model : "";
    const models = this.models;

    const labels = new RequestLabels();
    labels.requestModel = root.modelLabel(requested, served);
    labels.responseModel = answered.length > 0 ? root.modelLabel(answered, served) : labels.requestModel;
    labels.api = models != null ? models.api : apiShapeName(this.shape);
    labels.route = this.shadow ? ROUTE_SHADOW : currentRoute();
    labels.statusClass = statusClass(this.status);
    labels.outcome = outcome;
    // Envoy hands a filter the request headers only until they pass, and again in onLog: the tenant
    // is read here, and its hash goes to the access log but not to the span, which ended before. Only
    // for a label or a record: a header read in onLog is a host call of its own.
    const tenant = config.tenantHeader.length > 0 && (config.tenantLabel || config.records) ? requestHeader(config.tenantHeader) : null;
    if (config.tenantLabel) labels.tenant = tenant != null ? root.tenants.label(tenant, served) : LABEL_NONE;
    if (config.records && tenant != null) setFilterState(RECORD_TENANT, hex64(stableHash(tenant)));

    const recorded = root.labelSeries.of(labels);
    recorded.increment(Series.Requests, 1);
    recorded.record(Series.Duration, <u64>max<i64>(endMs - this.startMs, 0));
    if (this.activeId != NO_METRIC) incrementMetric(this.activeId, -1);

    const figures = this.figures;
    if (tracker != null && figures.ttftMs >= 0) {
      recorded.record(Series.TimeToFirstToken, <u64>figures.ttftMs);
      // Trailing events (finish reason, usage, [DONE]) carry no text: they do not stretch the per-token time.
      const perToken = timePerOutputToken(tracker.firstContentAtMs, tracker.lastContentAtMs, tracker.completionTokens);
      if (perToken >= 0) recorded.record(Series.TimePerOutputToken, <u64>perToken);
    }
    countTokens(recorded, Series.InputUsageTokens, Series.InputTokenUsage, figures.promptTokens);
    countTokens(recorded, Series.OutputUsageTokens, Series.OutputTokenUsage, figures.completionTokens);
    root.warnIfDropping(this.contextId);
  }

  /**
   * The request is over: the response's last byte passed here, or onLog came first (a response cut
   * short, or one an earlier filter answered). How it ended and what the answer cost are settled
   * once, and the request record written, here: Envoy ends the trace span, whose custom tags read
   * the record, when the response is through, before any filter's onLog.
   */
  private end(): void {
    if (this.ended) return;
    this.ended = true;
    const ending = new Ending();
    ending.status = this.response.status();
    ending.details = this.response.details();
    this.status = ending.status;
    this.outcome = outcomeOf(filterState(FACT_ADMISSION), filterState(FACT_THROTTLE), ending);
    const config = this.root.config;
    const tracker = this.tracker;
    if (tracker != null) {
      tracker.finish();
      // Facts published after the headers passed here (by a filter that reads the body without holding headers).
      const facts = this.facts != null ? this.facts : this.earlierFacts();
      this.figures = answerFigures(tracker, facts != null ? <i64>facts.promptTokens : 0, this.startMs);
    }
    if (!config.records) return;
    const figures = this.figures;
    setFilterState(RECORD_OUTCOME, this.outcome);
    if (tracker != null && tracker.model.length > 0) setFilterState(RECORD_RESPONSE_MODEL, tracker.model);
    if (tracker != null && tracker.finishReasons.length > 0) setFilterState(RECORD_FINISH_REASONS, tracker.finishReasons);
    if (figures.promptTokens >= 0) {
      setFilterState(RECORD_USAGE_PROMPT, figures.promptTokens.toString());
      setFilterState(RECORD_USAGE_COMPLETION, figures.completionTokens.toString());
      setFilterState(RECORD_USAGE_SOURCE, figures.reported ? "upstream" : "estimated");
    }
    if (figures.ttftMs >= 0) setFilterState(RECORD_TTFT, figures.ttftMs.toString());
  }

  private classify(): void {
    if (this.classified) return;
    this.classified = true;
    // Envoy's own start of the request, so time spent in earlier filters (a queue) counts too.
    const startNs = propertyInt(["request", "time"]);
    this.startMs = startNs > 0 ? startNs / 1_000_000 : nowMillis();
    const facts = this.earlierFacts();
    if (facts != null) {
      this.shape = facts.shape;
    } else {
      const method = requestHeader(":method");
      const path = requestHeader(":path");
      if (method != null && method == "POST" && path != null) {
        this.shape = apiShapeForPath(path);
      } else if (method != null && method == "GET") {
        const models = readModelsRequest(method, path, requestHeader("anthropic-version"));
        if (models.call != ModelsCall.None) this.models = models;
      }
    }
    this.llm = this.shape != ApiShape.Unknown || this.models != null;
    if (this.llm) this.shadow = isShadowRequest();
  }

  /** The model the request names: from the facts or the body, or the one a model request asks for. */
  private requestedModel(): string {
    const facts = this.facts;
    if (facts != null) return facts.model;
    const models = this.models;
    return models != null ? models.id : "";
  }

  /** The in-flight gauge counts from when the model is known (from facts or the body) until onLog. */
  private startActive(): void {
    this.activeId = this.root.activeGauge(this.root.modelLabel(this.requestedModel(), false));
    incrementMetric(this.activeId, 1);
  }
}

/** Exact totals in the counter, the per-request distribution in the histogram. */
function countTokens(recorded: LabelSeries, total: Series, perRequest: Series, tokens: i64): void {
  if (tokens < 0) return;
  recorded.increment(total, tokens);
  recorded.record(perRequest, <u64>tokens);
}
