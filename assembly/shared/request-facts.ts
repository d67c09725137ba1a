// What the first llm-mesh filter learned about a request, handed to the others (and to access logs)
// as filter state, and to the upstream as headers. Later filters read these instead of scanning
// the body again. Clients must not be able to forge them, so the headers are stripped on entry.
import { filterState, removeRequestHeader, setFilterState, setRequestHeader } from "./host";
import { ApiShape, apiShapeFromName, apiShapeName, LlmRequest } from "./llm-request";

export const FACT_MODEL = "llm_mesh.model";
export const FACT_API = "llm_mesh.api";
export const FACT_PROMPT_TOKENS = "llm_mesh.prompt_tokens";
export const FACT_MAX_TOKENS = "llm_mesh.max_tokens";
export const FACT_STREAM = "llm_mesh.stream";

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

  /** The facts an earlier llm-mesh filter published on this stream, or null if none did. */
  static fromFilterState(): RequestFacts | null {
    const api = filterState(FACT_API);
    if (api == null) return null;
    const facts = new RequestFacts();
    facts.shape = apiShapeFromName(api);
    const model = filterState(FACT_MODEL);
    facts.model = model != null ? model : "";
    const prompt = filterState(FACT_PROMPT_TOKENS);
    facts.promptTokens = prompt != null ? I32.parseInt(prompt) : 0;
    const maxTokens = filterState(FACT_MAX_TOKENS);
    facts.maxTokens = maxTokens != null && maxTokens.length > 0 ? I64.parseInt(maxTokens) : -1;
    const stream = filterState(FACT_STREAM);
    facts.stream = stream != null && stream == "true";
    return facts;
  }

  publish(withHeaders: bool): void {
    const api = apiShapeName(this.shape);
    const prompt = this.promptTokens.toString();
    const maxTokens = this.maxTokens >= 0 ? this.maxTokens.toString() : "";
    const stream = this.stream ? "true" : "false";
    setFilterState(FACT_API, api);
    setFilterState(FACT_MODEL, this.model);
    setFilterState(FACT_PROMPT_TOKENS, prompt);
    setFilterState(FACT_MAX_TOKENS, maxTokens);
    setFilterState(FACT_STREAM, stream);
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
