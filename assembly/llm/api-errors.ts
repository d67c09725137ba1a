// Errors in the client's own API shape, so SDKs surface them as they would the provider's:
// OpenAI `{"error":{"message","type","param","code"}}`, Anthropic `{"type":"error","error":{...}}`.
import { JsonObjectWriter, jsonQuote } from "../json/writer";
import { ApiShape, isAnthropic } from "./request";

export class ApiError {
  constructor(
    public status: u32,
    /** OpenAI's `code`, also the response-code detail Envoy logs. */
    public code: string,
    public message: string,
    public param: string = "",
  ) {}
}

export function invalidRequest(code: string, message: string, param: string = ""): ApiError {
  return new ApiError(400, code, message, param);
}

export function tooLarge(code: string, message: string, param: string = ""): ApiError {
  return new ApiError(413, code, message, param);
}

export function rateLimited(code: string, message: string): ApiError {
  return new ApiError(429, code, message);
}

function openAiType(status: u32): string {
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

function anthropicType(status: u32): string {
  if (status == 413) return "request_too_large";
  if (status == 429) return "rate_limit_error";
  if (status == 404) return "not_found_error";
  if (status >= 500) return "api_error";
  return "invalid_request_error";
}

export function errorBody(shape: ApiShape, error: ApiError): string {
  if (isAnthropic(shape)) {
    const inner = new JsonObjectWriter().string("type", anthropicType(error.status)).string("message", error.message);
    return new JsonObjectWriter().string("type", "error").raw("error", inner.toString()).toString();
  }
  const inner = new JsonObjectWriter()
    .string("message", error.message)
    .string("type", openAiType(error.status))
    .raw("param", error.param.length > 0 ? jsonQuote(error.param) : "null")
    .string("code", error.code);
  return new JsonObjectWriter().raw("error", inner.toString()).toString();
}
