// The admission filter's contexts: they read headers and the buffered body from Envoy, ask
// policy.ts for a verdict, and carry it out.
import {
  StreamContext,
  FilterDataStatusValues,
  FilterHeadersStatusValues,
} from "../host/contexts";
import { errorBody, ApiError } from "../llm/api-errors";
import { Logger, replaceRequestBody, requestBody, ResponseHeaders, sendResponse } from "../host/calls";
import { removeRequestHeader, requestHeader, setEffectiveContext, setRequestHeader } from "../host/callback-cache";
import { setFilterState } from "../host/filter-state";
import { FACT_ADMISSION } from "../llm/filter-state-names";
import { OUTCOME_REJECTED, setRefusal } from "../llm/outcome";
import { ApiShape, readLlmRequest } from "../llm/request";
import { RequestFacts, stripInternalHeaders } from "../llm/request-facts";
import { TokenEstimator } from "../llm/tokens";
import { ConfigErrors, ConfigObject } from "../json/config-reader";
import { AdmissionConfig, readAdmissionConfig } from "./config";
import { checkDeclaredLength, checkReceivedLength, clampedBody, decide, encodedBodyRequest, isPlainEncoding, Outcome, OUTCOME_NAMES } from "./policy";
import { HeaderHold, HoldingRoot } from "../host/header-hold";
import { ModelsListStream } from "./models-list-stream";

export const FILTER_NAME = "llm-admission";

/** Counter: held requests let go without their body after hold_headers_timeout_ms (hold-rules.ts). */
export const METRIC_HOLD_TIMEOUTS = "llm_admission_hold_headers_timeouts_total";

const logger = new Logger(FILTER_NAME);
const NO_EXTRA_HEADERS: string[] = [];

/** Logged once per root when Envoy is seen keeping a held request's body from this filter. */
const HOLD_WARNING =
  "hold_headers is on, but Envoy does not hand this filter the body of a request whose headers it holds, so this worker stops holding them " +
  "(no x-llm-* headers upstream); set allow_on_headers_stop_iteration: true on the Wasm filter " +
  "(in Istio, apply the hold-headers EnvoyFilter in k8s/base/hold-headers-envoyfilter.yaml) or set hold_headers: false";

export class AdmissionRoot extends HoldingRoot {
  config: AdmissionConfig = new AdmissionConfig();
  /** One estimator per worker: requests on a worker run one callback at a time. */
  estimator: TokenEstimator = new TokenEstimator();

  constructor(contextId: u32) {
    super(contextId, new HeaderHold(logger, METRIC_HOLD_TIMEOUTS, HOLD_WARNING));
  }

  createContext(contextId: u32): StreamContext {
    return new AdmissionStream(contextId, this);
  }

  configure(source: ConfigObject, errors: ConfigErrors): void {
    const parsed = readAdmissionConfig(source, errors);
    if (parsed.config == null) return;
    const config = parsed.config!;
    this.config = config;
    this.hold.configure(config.holdHeadersTimeoutMs, config.holdHeaders);
  }

  /** Whether a request holds its headers: asked for, and not known to stall in this Envoy. */
  holdsHeaders(): bool {
    return this.config.holdHeaders && this.hold.holds;
  }

  /**
   * Whether a model list's answer may hold its headers until it is rewritten. Envoy gives an answer's
   * body to a filter that holds its headers only with the same flag, and no timeout watches an
   * answer: so only once a held request proved the flag there, else the list goes out chunked.
   */
  holdsAnswerHeaders(): bool {
    return this.config.holdHeaders && this.hold.handsOverBody;
  }

}

export class AdmissionStream extends StreamContext {
  private shape: ApiShape = ApiShape.Unknown;
  private finished: bool = false;
  private encoded: bool = false;
  /** The headers wait for the verdict: hold_headers, until they are let go without it (letGo). */
  private holding: bool = false;
  /** Set on a model list or model request (GET /v1/models...), whose answer this filter may rewrite. */
  private models: ModelsListStream | null = null;

  constructor(contextId: u32, private root: AdmissionRoot) {
    super(contextId, root);
  }

  onRequestHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    stripInternalHeaders(NO_EXTRA_HEADERS);
    const config = this.root.config;
    const method = requestHeader(":method");
    const path = requestHeader(":path");
    const models = ModelsListStream.start(this.contextId, config, logger, method, path);
    if (models != null) {
      this.models = models;
      return models.onRequestHeaders();
    }
    if (method == null || method != "POST" || path == null) return FilterHeadersStatusValues.Continue;
    this.shape = config.shapeFor(path);
    if (this.shape == ApiShape.Unknown) return FilterHeadersStatusValues.Continue;
    this.encoded = !isPlainEncoding(requestHeader("content-encoding"));
    this.holding = this.root.holdsHeaders();
    if (endOfStream) {
      this.admit(new Uint8Array(0));
      return this.finished ? FilterHeadersStatusValues.StopIteration : FilterHeadersStatusValues.Continue;
    }
    const declared = requestHeader("content-length");
    if (declared != null && declared.length > 0) {
      const length = I64.parseInt(declared);
      const error = checkDeclaredLength(config, length);
      if (error != null) {
        this.reject(error);
        return FilterHeadersStatusValues.StopIteration;
      }
    }
    if (this.holding) {
      this.root.hold.held(this);
      return FilterHeadersStatusValues.StopIteration;
    }
    this.headersGoFirst();
    return FilterHeadersStatusValues.Continue;
  }

  /** The headers go upstream now, so a body that may be rewritten cannot keep its declared length. */
  private headersGoFirst(): void {
    if (this.root.config.mayRewriteBody) removeRequestHeader("content-length");
  }

  /**
   * From the root's tick: the body did not come while the headers were held, so the request goes on
   * as with hold_headers false. Envoy then hands over the body it kept back, which is still read,
   * and may still be refused or clamped.
   */
  letGoHeaders(): void {
    // Header changes and the resume act on the stream only once it is made current.
    setEffectiveContext(this.contextId);
    this.holding = false;
    this.headersGoFirst();
    this.continueRequest();
  }

  onRequestBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    if (this.shape == ApiShape.Unknown || this.finished) return FilterDataStatusValues.Continue;
    if (this.holding) this.root.hold.delivered();
    const error = checkReceivedLength(this.root.config, <i64>bodyBufferLength);
    if (error != null) {
      this.reject(error);
      return FilterDataStatusValues.StopIterationNoBuffer;
    }
    if (!endOfStream) return FilterDataStatusValues.StopIterationAndBuffer;
    this.admit(requestBody(0, <u32>bodyBufferLength));
    return this.finished ? FilterDataStatusValues.StopIterationNoBuffer : FilterDataStatusValues.Continue;
  }

  private admit(body: Uint8Array): void {
    const config = this.root.config;
    const estimator = this.root.estimator;
    let request = this.encoded ? encodedBodyRequest(this.shape) : readLlmRequest(body, this.shape, estimator);
    let verdict = decide(config, request, body.length);
    const limits = verdict.limits;
    // The body was estimated with the default tokenizer; a model on another one is estimated again.
    if (limits != null && limits.tokenizer != estimator.family) {
      const rescored = new TokenEstimator(limits.tokenizer);
      request = readLlmRequest(body, this.shape, rescored);
      verdict = decide(config, request, body.length);
    }
    setFilterState(FACT_ADMISSION, unchecked(OUTCOME_NAMES[<i32>verdict.outcome]), config.filterState);
    if (verdict.outcome == Outcome.Rejected) {
      // Metrics and access logs still name the model a refused request asked for.
      if (request.hasModel) RequestFacts.fromRequest(request).publish(false, config.filterState);
      this.reject(verdict.error!);
      return;
    }
    if (verdict.outcome == Outcome.Clamped) {
      const rewritten = clampedBody(body, request, verdict.clampTo);
      replaceRequestBody(<u32>body.length, rewritten);
      if (this.holding) setRequestHeader("content-length", rewritten.length.toString());
      request.maxTokens = verdict.clampTo;
      logger.debug(this.contextId, "clamped " + request.maxTokensField + " to " + verdict.clampTo.toString());
    }
    if (verdict.outcome != Outcome.PassedThrough) {
      RequestFacts.fromRequest(request).publish(this.holding && config.forwardHeaders, config.filterState);
    }
  }

  onResponseHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    const models = this.models;
    return models != null ? models.onResponseHeaders(endOfStream, this.root.holdsAnswerHeaders()) : FilterHeadersStatusValues.Continue;
  }

  onResponseBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    const models = this.models;
    return models != null ? models.onResponseBody(bodyBufferLength, endOfStream) : FilterDataStatusValues.Continue;
  }

  /** A held request that ends (answered, reset by the client) is no longer watched. */
  onDelete(): void {
    if (this.holding) this.root.hold.forget(this);
  }

  private reject(error: ApiError): void {
    this.finished = true;
    setRefusal(FACT_ADMISSION, "rejected:" + error.code, OUTCOME_REJECTED, this.root.config.filterState);
    logger.debug(this.contextId, "rejected " + error.status.toString() + " " + error.code + ": " + error.message);
    const headers = new ResponseHeaders().add("content-type", "application/json");
    sendResponse(error.status, FILTER_NAME + "_" + error.code, errorBody(this.shape, error), headers);
  }
}
