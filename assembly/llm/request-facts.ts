// What the first llm-mesh filter learned about a request, handed to the others (and to access logs)
// as filter state, and to the upstream as headers. Later filters read these instead of scanning
// the body again. Clients must not be able to forge them, so the headers are stripped on entry.
import { filterState, setFilterState } from "../host/filter-state";
import { removeRequestHeader, setRequestHeader } from "../host/callback-cache";
import { ApiShape, apiShapeFromName, apiShapeName, genAiOperation, genAiProvider, LlmRequest } from "./request";
import { FACT_ALL, FACT_API, FACT_MAX_TOKENS, FACT_MODEL, FACT_OPERATION, FACT_PROMPT_TOKENS, FACT_PROVIDER, FACT_STREAM } from "./filter-state-names";

export const HEADER_MODEL = "x-llm-model";
export const HEADER_API = "x-llm-api";
export const HEADER_PROMPT_TOKENS = "x-llm-prompt-tokens";
export const HEADER_MAX_TOKENS = "x-llm-max-tokens";
export const HEADER_STREAM = "x-llm-stream";

/** Every request header llm-mesh itself sets; any of them arriving from a client is a forgery. */
export const INTERNAL_REQUEST_HEADERS: string[] = [HEADER_MODEL, HEADER_API, HEADER_PROMPT_TOKENS, HEADER_MAX_TOKENS, HEADER_STREAM];

export function stripInternalHeaders(extra: string[]): void {
  for (let i = 0; i < INTERNAL_REQUEST_HEADERS.length; i++) removeRequestHeader(unchecked(INTERNAL_REQUEST_HEADERS[i]));
  for (let i = 0; i < extra.length; i++) removeRequestHeader(unchecked(extra[i]));
}

export class RequestFacts {
  shape: ApiShape = ApiShape.Unknown;
  model: string = "";
  promptTokens: i32 = 0;
  /** -1 when the request sets no output budget. */
  maxTokens: i64 = -1;
  stream: bool = false;

  static fromRequest(request: LlmRequest): RequestFacts {
    const facts = new RequestFacts();
    facts.shape = request.shape;
    facts.model = request.model;
    facts.promptTokens = request.promptTokens;
    facts.maxTokens = request.maxTokens;
    facts.stream = request.stream;
    return facts;
  }

  /**
   * The facts an earlier llm-mesh filter published on this stream, or null if none did. (A filter
   * built before FACT_ALL existed publishes only the separate facts: the filters after it then read
   * the body themselves, as when they run alone.)
   */
  static fromFilterState(): RequestFacts | null {
    const all = filterState(FACT_ALL);
    return all != null ? RequestFacts.parse(all) : null;
  }

  /** The facts as FACT_ALL holds them. */
  toString(): string {
    const maxTokens = this.maxTokens >= 0 ? this.maxTokens.toString() : "";
    return apiShapeName(this.shape) + "," + this.promptTokens.toString() + "," + maxTokens + "," + (this.stream ? "1" : "0") + "," + this.model;
  }

  /** Facts from their FACT_ALL text; null for text not written by toString. */
  static parse(text: string): RequestFacts | null {
    const api = text.indexOf(",");
    const prompt = api < 0 ? -1 : text.indexOf(",", api + 1);
    const maxTokens = prompt < 0 ? -1 : text.indexOf(",", prompt + 1);
    const stream = maxTokens < 0 ? -1 : text.indexOf(",", maxTokens + 1);
    if (stream != maxTokens + 2) return null;
    const facts = new RequestFacts();
    facts.shape = apiShapeFromName(text.slice(0, api));
    facts.promptTokens = <i32>I64.parseInt(text.slice(api + 1, prompt));
    facts.maxTokens = maxTokens > prompt + 1 ? I64.parseInt(text.slice(prompt + 1, maxTokens)) : -1;
    facts.stream = text.charCodeAt(maxTokens + 1) == 0x31;
    facts.model = text.slice(stream + 1);
    return facts;
  }

  /** `toHost` as setFilterState's: false keeps the facts for this module's later stages only. */
  publish(withHeaders: bool, toHost: bool = true): void {
    const api = apiShapeName(this.shape);
    const prompt = this.promptTokens.toString();
    const maxTokens = this.maxTokens >= 0 ? this.maxTokens.toString() : "";
    const stream = this.stream ? "true" : "false";
    setFilterState(FACT_ALL, this.toString(), toHost);
    setFilterState(FACT_API, api, toHost);
    setFilterState(FACT_MODEL, this.model, toHost);
    setFilterState(FACT_PROMPT_TOKENS, prompt, toHost);
    setFilterState(FACT_MAX_TOKENS, maxTokens, toHost);
    setFilterState(FACT_STREAM, stream, toHost);
    // The OpenTelemetry names of the request's API: only trace spans' custom tags read them.
    setFilterState(FACT_OPERATION, genAiOperation(this.shape), toHost);
    setFilterState(FACT_PROVIDER, genAiProvider(this.shape), toHost);
    if (!withHeaders) return;
    setRequestHeader(HEADER_API, api);
    if (this.model.length > 0) setRequestHeader(HEADER_MODEL, headerSafe(this.model));
    setRequestHeader(HEADER_PROMPT_TOKENS, prompt);
    if (maxTokens.length > 0) setRequestHeader(HEADER_MAX_TOKENS, maxTokens);
    setRequestHeader(HEADER_STREAM, stream);
  }
}

const MAX_HEADER_VALUE: i32 = 256;

/** Client text made fit for a header value: no control characters, bounded length. */
export function headerSafe(text: string): string {
  let out = text.length > MAX_HEADER_VALUE ? text.slice(0, MAX_HEADER_VALUE) : text;
  for (let i = 0; i < out.length; i++) {
    const c = out.charCodeAt(i);
    if (c < 0x20 || c == 0x7f) {
      out = out.slice(0, i) + "?" + out.slice(i + 1);
    }
  }
  return out;
}
