// A model list or model request on an admission stream: it moves headers and bodies between Envoy
// and models-list.ts. The answer is read whole, within the filter's body limit (the largest
// `max_body_bytes`), then written back with a true content-length when the headers could be held
// (`hold_headers`); otherwise the headers go on at once without content-length. An answer there is
// nothing to read from (an error, no body, an encoding, more than the limit) is replaced by the list
// the configuration gives: while the headers are still here, as a local reply.
import { errorBody } from "../shared/api-errors";
import { FilterDataStatusValues, FilterHeadersStatusValues } from "../shared/context";
import {
  Logger,
  removeRequestHeader,
  removeResponseHeader,
  replaceResponseBody,
  requestHeader,
  responseBody,
  responseHeader,
  ResponseHeaders,
  sendResponse,
  setFilterState,
  setResponseHeader,
} from "../shared/host";
import { ApiShape } from "../shared/llm-request";
import { ModelsCall, ModelsRequest, readModelsRequest, routerModels } from "../shared/models-api";
import { AdmissionConfig, ModelListMode } from "./config";
import { configuredList, filteredList, ListPlan, planList, retrieveRefusal } from "./models-list";

/** Admission's decision in filter state (filter.ts's FACT_ADMISSION), which the metrics filter reads. */
const FACT_ADMISSION = "llm_mesh.admission";
const NOTHING = new Uint8Array(0);

enum Step {
  /** For the model server's answer. */
  Waiting = 0,
  /** Its body, until the end. */
  Buffering,
  /** Its body past the limit, after the configuration's list went out instead: dropped as it comes. */
  Draining,
  /** Answered, or left alone. */
  Done,
}

/** Warned once per worker (module globals are per VM): an answer over the limit is a setting to change. */
let warnedOverLimit = false;

export class ModelsListStream {
  private step: Step = Step.Waiting;
  private held: bool = false;

  constructor(private contextId: u32, private config: AdmissionConfig, private logger: Logger, private request: ModelsRequest) {}

  /** The models request this filter answers for, or null: another request, or `model_list: upstream`. */
  static start(contextId: u32, config: AdmissionConfig, logger: Logger, method: string | null, path: string | null): ModelsListStream | null {
    if (config.modelList != ModelListMode.Admitted || method == null || method != "GET") return null;
    const request = readModelsRequest(method, path, requestHeader("anthropic-version"));
    if (request.call == ModelsCall.None) return null;
    return new ModelsListStream(contextId, config, logger, request);
  }

  onRequestHeaders(): FilterHeadersStatusValues {
    if (this.request.call == ModelsCall.Retrieve) {
      this.step = Step.Done;
      const refusal = retrieveRefusal(this.config, this.request);
      if (refusal == null) return FilterHeadersStatusValues.Continue;
      setFilterState(FACT_ADMISSION, "rejected:" + refusal.code);
      this.logger.debug(this.contextId, "refused model " + this.request.id + " without asking the model server");
      const shape = this.request.anthropic ? ApiShape.AnthropicMessages : ApiShape.Unknown;
      sendResponse(refusal.status, this.logger.filter + "_" + refusal.code, errorBody(shape, refusal), jsonHeaders());
      return FilterHeadersStatusValues.StopIteration;
    }
    // The answer is to be read here: ask for it uncompressed.
    removeRequestHeader("accept-encoding");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(end_of_stream: bool): FilterHeadersStatusValues {
    if (this.step != Step.Waiting) return FilterHeadersStatusValues.Continue;
    const statusText = responseHeader(":status");
    const status = statusText != null ? I32.parseInt(statusText) : 0;
    const declared = responseHeader("content-length");
    const length = declared != null && declared.length > 0 ? I64.parseInt(declared) : -1;
    const plan = planList(status, responseHeader("content-encoding"), length, end_of_stream, this.config.maxBufferBytes);
    if (plan == ListPlan.Untouched) {
      this.step = Step.Done;
      return FilterHeadersStatusValues.Continue;
    }
    if (plan == ListPlan.FromConfig) {
      let reason = "the model server answered " + status.toString() + (end_of_stream ? " without a body" : "");
      if (length > this.config.maxBufferBytes) {
        this.warnOverLimit();
        reason = "the model server's list is " + length.toString() + " bytes";
      }
      this.replyFromConfig(reason);
      return FilterHeadersStatusValues.StopIteration;
    }
    this.step = Step.Buffering;
    if (this.config.holdHeaders) {
      this.held = true;
      return FilterHeadersStatusValues.StopIteration;
    }
    // The headers go on now, before the length of the answer is known.
    removeResponseHeader("content-length");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    const length = <u32>body_buffer_length;
    if (this.step == Step.Draining) {
      if (length > 0) replaceResponseBody(length, NOTHING);
      return FilterDataStatusValues.Continue;
    }
    if (this.step != Step.Buffering) return FilterDataStatusValues.Continue;
    const anthropic = this.request.anthropic;
    if (<i64>length > this.config.maxBufferBytes) {
      this.warnOverLimit();
      if (this.held) {
        this.replyFromConfig("the model server's list is over " + this.config.maxBufferBytes.toString() + " bytes");
        return FilterDataStatusValues.StopIterationNoBuffer;
      }
      replaceResponseBody(length, configuredList(this.config, anthropic));
      this.step = Step.Draining;
      return FilterDataStatusValues.Continue;
    }
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    this.step = Step.Done;
    let answer = filteredList(this.config, responseBody(0, length), anthropic, routerModels());
    if (answer == null) {
      this.logger.debug(this.contextId, "the model server's answer is no model list; answering the configuration's");
      answer = configuredList(this.config, anthropic);
      if (this.held) setResponseHeader("content-type", "application/json");
    }
    replaceResponseBody(length, answer);
    if (this.held) setResponseHeader("content-length", answer.length.toString());
    return FilterDataStatusValues.Continue;
  }

  /** Answers the configuration's list in place of the model server's answer, whose headers are still here. */
  private replyFromConfig(reason: string): void {
    this.step = Step.Done;
    this.logger.debug(this.contextId, reason + "; answering the model list from the configuration");
    const list = configuredList(this.config, this.request.anthropic);
    sendResponse(200, this.logger.filter + "_model_list_from_config", String.UTF8.decodeUnsafe(list.dataStart, list.length), jsonHeaders());
  }

  private warnOverLimit(): void {
    if (warnedOverLimit) return;
    warnedOverLimit = true;
    this.logger.warn(this.contextId, "the model server's model list is over " + this.config.maxBufferBytes.toString() +
      " bytes, the most this filter buffers (the largest max_body_bytes); it answers the configuration's exact names instead: raise models.default.max_body_bytes to list what the model server serves");
  }
}

function jsonHeaders(): ResponseHeaders {
  return new ResponseHeaders().add("content-type", "application/json");
}
