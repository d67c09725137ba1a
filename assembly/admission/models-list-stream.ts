// A model list or model request on an admission stream: it moves headers and bodies between Envoy
// and models-list.ts. The model server's answer is gathered here chunk by chunk, never past the
// filter's body limit (the largest `max_body_bytes`), and goes on as the last chunk, rewritten: with
// a true content-length when the headers could be held (`hold_headers`), otherwise without one
// (the headers went on at once). An answer there is nothing to read from (an error, no body, an
// encoding, more than the limit) is replaced by the list the configuration gives: as a local reply
// while its headers are still here.
import { errorBody } from "../llm/api-errors";
import { ByteWriter } from "../text/byte-writer";
import { FilterDataStatusValues, FilterHeadersStatusValues } from "../host/contexts";
import { Logger, replaceResponseBody, responseBody, ResponseHeaders, sendResponse } from "../host/calls";
import { removeRequestHeader, removeResponseHeader, requestHeader, responseHeader, responseStatus, setResponseHeader } from "../host/callback-cache";
import { FACT_ADMISSION } from "../llm/filter-state-names";
import { OUTCOME_REJECTED, setRefusal } from "../llm/outcome";
import { ApiShape } from "../llm/request";
import { ModelsCall, ModelsRequest, readModelsRequest, routerModels } from "../llm/models-api";
import { AdmissionConfig, ModelListMode } from "./config";
import { configuredList, filteredList, ListPlan, planList, retrieveRefusal } from "./models-list";

const NOTHING = new Uint8Array(0);

enum Step {
  /** For the model server's answer. */
  Waiting = 0,
  /** Its body, gathered here until the end. */
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
  /** The answer so far, while buffering. */
  private received: ByteWriter | null = null;

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
      setRefusal(FACT_ADMISSION, "rejected:" + refusal.code, OUTCOME_REJECTED, this.config.filterState);
      this.logger.debug(this.contextId, "refused model " + this.request.id + " without asking the model server");
      const shape = this.request.anthropic ? ApiShape.AnthropicMessages : ApiShape.Unknown;
      sendResponse(refusal.status, this.logger.filter + "_" + refusal.code, errorBody(shape, refusal), jsonHeaders());
      return FilterHeadersStatusValues.StopIteration;
    }
    // The answer is to be read here: ask for it uncompressed.
    removeRequestHeader("accept-encoding");
    return FilterHeadersStatusValues.Continue;
  }

  /** `holdHeaders`: the answer's headers may wait for the rewritten list (AdmissionRoot.holdsAnswerHeaders). */
  onResponseHeaders(endOfStream: bool, holdHeaders: bool): FilterHeadersStatusValues {
    if (this.step != Step.Waiting) return FilterHeadersStatusValues.Continue;
    const status = responseStatus();
    const declared = responseHeader("content-length");
    const length = declared != null && declared.length > 0 ? I64.parseInt(declared) : -1;
    const plan = planList(status, responseHeader("content-encoding"), length, endOfStream, this.config.maxBufferBytes);
    if (plan == ListPlan.Untouched) {
      this.step = Step.Done;
      return FilterHeadersStatusValues.Continue;
    }
    if (plan == ListPlan.FromConfig) {
      let reason = "the model server answered " + status.toString() + (endOfStream ? " without a body" : "");
      if (length > this.config.maxBufferBytes) {
        this.warnOverLimit();
        reason = "the model server's list is " + length.toString() + " bytes";
      }
      this.replyFromConfig(reason);
      return FilterHeadersStatusValues.StopIteration;
    }
    this.step = Step.Buffering;
    this.received = new ByteWriter(length > 0 ? <i32>length : 4096);
    if (holdHeaders) {
      this.held = true;
      return FilterHeadersStatusValues.StopIteration;
    }
    // The headers go on now, before the length of the answer is known.
    removeResponseHeader("content-length");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    const length = <u32>bodyBufferLength;
    if (this.step == Step.Draining) {
      if (length > 0) replaceResponseBody(length, NOTHING);
      return FilterDataStatusValues.Continue;
    }
    const received = this.received;
    if (this.step != Step.Buffering || received == null) return FilterDataStatusValues.Continue;
    const anthropic = this.request.anthropic;
    if (<i64>received.length + <i64>length > this.config.maxBufferBytes) {
      this.warnOverLimit();
      if (this.held) {
        this.replyFromConfig("the model server's list is over " + this.config.maxBufferBytes.toString() + " bytes");
        return FilterDataStatusValues.StopIterationNoBuffer;
      }
      replaceResponseBody(length, configuredList(this.config, anthropic));
      this.step = endOfStream ? Step.Done : Step.Draining;
      return FilterDataStatusValues.Continue;
    }
    if (length > 0) received.append(responseBody(0, length));
    // Kept here rather than in Envoy's buffer: Envoy adds each chunk to its buffer before this
    // filter sees it, and fails the answer (500) when one chunk takes it past its own limit.
    if (!endOfStream) return FilterDataStatusValues.StopIterationNoBuffer;
    this.step = Step.Done;
    this.received = null;
    let answer = filteredList(this.config, received.view(), anthropic, routerModels());
    if (answer == null) {
      this.logger.debug(this.contextId, "the model server's answer is no model list; answering the configuration's");
      answer = configuredList(this.config, anthropic);
      if (this.held) setResponseHeader("content-type", "application/json");
    }
    // The last chunk carries the whole answer; the ones before it were not passed on.
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
