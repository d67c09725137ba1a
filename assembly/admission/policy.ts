// Admission decisions as plain functions of the config and what the request says; the stream
// context only moves bytes between Envoy and these.
import { ApiError, invalidRequest, tooLarge } from "../llm/api-errors";
import { ApiShape, LlmRequest } from "../llm/request";
import { AdmissionConfig, ModelLimits, OutputLimitAction } from "./config";
import { asciiLower } from "../text/ascii";

export enum Outcome {
  Admitted = 0,
  /** Admitted after lowering the requested output budget. */
  Clamped,
  /** Not understood, and let through because the config says so. */
  PassedThrough,
  Rejected,
}

export const OUTCOME_NAMES: string[] = ["admitted", "clamped", "passed_through", "rejected"];

export class Verdict {
  outcome: Outcome = Outcome.Admitted;
  error: ApiError | null = null;
  limits: ModelLimits | null = null;
  /** The output budget to write into the body when clamping. */
  clampTo: i64 = -1;

  static reject(error: ApiError): Verdict {
    const verdict = new Verdict();
    verdict.outcome = Outcome.Rejected;
    verdict.error = error;
    return verdict;
  }
}

function bodyTooLarge(size: i64, limit: i64): ApiError {
  return tooLarge("request_too_large", "Request body is " + size.toString() + " bytes; the limit is " + limit.toString() + " bytes.");
}

/** Before the body arrives: a declared length over every limit cannot be admitted. */
export function checkDeclaredLength(config: AdmissionConfig, contentLength: i64): ApiError | null {
  return contentLength > config.maxBufferBytes ? bodyTooLarge(contentLength, config.maxBufferBytes) : null;
}

/** While the body arrives: stop buffering as soon as it passes the largest limit. */
export function checkReceivedLength(config: AdmissionConfig, received: i64): ApiError | null {
  return received > config.maxBufferBytes ? bodyTooLarge(received, config.maxBufferBytes) : null;
}

/** Whether a content-encoding header leaves the body as sent: absent, empty or `identity`. */
export function isPlainEncoding(header: string | null): bool {
  if (header == null) return true;
  const value = asciiLower(header.trim());
  return value.length == 0 || value == "identity";
}

/**
 * A compressed body (gzip, br, ...) cannot be read here, and the model server reads what it
 * decompresses to: it is an invalid body, rejected or passed through as `invalid_body` says.
 */
export function encodedBodyRequest(shape: ApiShape): LlmRequest {
  const request = new LlmRequest();
  request.shape = shape;
  request.error = "the body has a content-encoding, and llm-admission reads only uncompressed bodies; send it without one";
  return request;
}

export function decide(config: AdmissionConfig, request: LlmRequest, bodyBytes: i64): Verdict {
  if (!request.ok) {
    if (!config.rejectInvalidBodies) {
      const verdict = new Verdict();
      verdict.outcome = Outcome.PassedThrough;
      return verdict;
    }
    return Verdict.reject(invalidRequest("invalid_request_body", "Invalid request body: " + request.error + ".", request.errorParam));
  }
  if (!request.hasModel && config.rejectUnknownModels) {
    return Verdict.reject(invalidRequest("model_required", "The request must name a model.", "model"));
  }
  const limits = config.limitsFor(request.model);
  if (limits == null) {
    return Verdict.reject(invalidRequest("model_not_found", "The model `" + request.model + "` is not served here; allowed: " + config.models.names().join(", ") + ".", "model"));
  }
  if (bodyBytes > limits.maxBodyBytes) {
    const verdict = Verdict.reject(bodyTooLarge(bodyBytes, limits.maxBodyBytes));
    verdict.limits = limits;
    return verdict;
  }
  if (limits.maxPromptTokens > 0 && <i64>request.promptTokens > limits.maxPromptTokens) {
    const verdict = Verdict.reject(tooLarge("context_length_exceeded", "The prompt is estimated at " + request.promptTokens.toString() +
      " tokens; the limit for model `" + request.model + "` is " + limits.maxPromptTokens.toString() + " tokens.", "messages"));
    verdict.limits = limits;
    return verdict;
  }
  const verdict = new Verdict();
  verdict.limits = limits;
  if (limits.maxOutputTokens > 0 && request.maxTokens > limits.maxOutputTokens) {
    if (limits.outputLimitAction == OutputLimitAction.Reject) {
      const rejected = Verdict.reject(invalidRequest("max_tokens_exceeded", request.maxTokensField + " is " + request.maxTokens.toString() +
        "; the limit for model `" + request.model + "` is " + limits.maxOutputTokens.toString() + ".", request.maxTokensField));
      rejected.limits = limits;
      return rejected;
    }
    verdict.outcome = Outcome.Clamped;
    verdict.clampTo = limits.maxOutputTokens;
  }
  return verdict;
}

/** The body with every output budget over `clampTo` lowered to it; only those numbers' bytes change. */
export function clampedBody(body: Uint8Array, request: LlmRequest, clampTo: i64): Uint8Array {
  const digits = Uint8Array.wrap(String.UTF8.encode(clampTo.toString()));
  let out = body;
  // From the last field backwards, so earlier spans keep their offsets.
  for (let i = request.outputBudgets.length - 1; i >= 0; i--) {
    const budget = unchecked(request.outputBudgets[i]);
    if (budget.value <= clampTo) continue;
    const start = budget.span.start;
    const end = budget.span.end;
    const next = new Uint8Array(out.length - (end - start) + digits.length);
    next.set(out.subarray(0, start), 0);
    next.set(digits, start);
    next.set(out.subarray(end), start + digits.length);
    out = next;
  }
  return out;
}
