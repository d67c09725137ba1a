// What an LLM request asks for, read from its body in one pass: the model, the output budget, whether
// it streams, and an estimate of its prompt tokens. Every llm-mesh filter that needs these reads
// them here (or from the filter state the first filter leaves), so the body is scanned once.
import { hexValue, JsonKind, JsonReader, JsonSpan } from "../json/reader";
import { TokenEstimator } from "./tokens";

export enum ApiShape {
  Unknown = 0,
  OpenAIChat,
  OpenAICompletions,
  OpenAIEmbeddings,
  AnthropicMessages,
}

export const API_SHAPE_NAMES: string[] = ["unknown", "openai.chat", "openai.completions", "openai.embeddings", "anthropic.messages"];

export function apiShapeName(shape: ApiShape): string {
  return unchecked(API_SHAPE_NAMES[<i32>shape]);
}

// OpenTelemetry's GenAI names of each shape's operation and provider. The provider is the vendor
// whose API the request speaks, as the conventions ask of a client that cannot tell more (an
// OpenAI-compatible server is `openai`).
const GEN_AI_OPERATIONS: string[] = ["", "chat", "text_completion", "embeddings", "chat"];
const GEN_AI_PROVIDERS: string[] = ["", "openai", "openai", "openai", "anthropic"];

/** gen_ai.operation.name; "" for an unknown shape. */
export function genAiOperation(shape: ApiShape): string {
  return unchecked(GEN_AI_OPERATIONS[<i32>shape]);
}

/** gen_ai.provider.name; "" for an unknown shape. */
export function genAiProvider(shape: ApiShape): string {
  return unchecked(GEN_AI_PROVIDERS[<i32>shape]);
}

export function apiShapeFromName(name: string): ApiShape {
  const index = API_SHAPE_NAMES.indexOf(name);
  return index > 0 ? <ApiShape>index : ApiShape.Unknown;
}

export function isAnthropic(shape: ApiShape): bool {
  return shape == ApiShape.AnthropicMessages;
}

/**
 * A request path as the model server routes it: without the query and with percent-escapes
 * decoded, %2F included (the ASGI spec has servers decode them before routing, so
 * `/v1/chat/%63ompletions` reaches the chat endpoint). Decoded bytes become the characters of the
 * same code, which is enough to compare with ASCII paths.
 */
export function routedPath(path: string): string {
  let end = path.indexOf("?");
  if (end < 0) end = path.length;
  const raw = path.slice(0, end);
  if (!raw.includes("%")) return raw;
  const units = new Array<i32>();
  let i = 0;
  while (i < raw.length) {
    const c = raw.charCodeAt(i);
    const high = c == 0x25 && i + 2 < raw.length ? hexDigit(raw.charCodeAt(i + 1)) : -1;
    const low = high >= 0 ? hexDigit(raw.charCodeAt(i + 2)) : -1;
    if (low >= 0) {
      units.push((high << 4) | low);
      i += 3;
    } else {
      units.push(c);
      i++;
    }
  }
  return String.fromCharCodes(units);
}

function hexDigit(c: i32): i32 {
  return c < 0x80 ? hexValue(<u8>c) : -1;
}

/** The API a request path belongs to, by the endpoint suffix both vendors and their clones use. */
export function apiShapeForPath(path: string): ApiShape {
  let clean = routedPath(path);
  while (clean.length > 1 && clean.endsWith("/")) clean = clean.slice(0, clean.length - 1);
  if (clean.endsWith("/chat/completions")) return ApiShape.OpenAIChat;
  if (clean.endsWith("/completions")) return ApiShape.OpenAICompletions;
  if (clean.endsWith("/embeddings")) return ApiShape.OpenAIEmbeddings;
  if (clean.endsWith("/v1/messages")) return ApiShape.AnthropicMessages;
  return ApiShape.Unknown;
}

// Chat formats wrap each message in a few tokens of role and separator; the reply is primed with a
// few more. These follow OpenAI's published accounting for chat models.
const TOKENS_PER_MESSAGE: i32 = 4;
const TOKENS_REPLY_PRIMER: i32 = 3;
// An image costs what its size and detail say, which the body does not tell; this is the cost of a
// high-detail 1024x1024 image, so estimates err high rather than low.
export const TOKENS_PER_IMAGE: i32 = 765;

export class OutputBudget {
  constructor(public value: i64, public span: JsonSpan) {}
}

export class LlmRequest {
  shape: ApiShape = ApiShape.Unknown;
  model: string = "";
  hasModel: bool = false;
  /** The requested output budget, -1 when the body sets none. */
  maxTokens: i64 = -1;
  /** Which field carried it ("max_tokens" or "max_completion_tokens"), for messages. */
  maxTokensField: string = "";
  /** Every output-budget field in the body, in order, for rewrites. */
  outputBudgets: OutputBudget[] = [];
  stream: bool = false;
  includeUsage: bool = false;
  promptTokens: i32 = 0;
  messages: i32 = 0;
  /** Empty when the body was read; otherwise why it could not be, and the offending parameter. */
  error: string = "";
  errorParam: string = "";

  get ok(): bool {
    return this.error.length == 0;
  }
}

// The top-level keys a scan reads, each allowed once (RequestScan#firstTime): bits of a mask rather
// than a Set<string>, whose allocations and string hashing were a good part of reading a small body.
enum TopKey {
  Model,
  MaxTokens,
  MaxCompletionTokens,
  Stream,
  StreamOptions,
  Messages,
  System,
  Prompt,
  Input,
  Tools,
  Functions,
}

const TOP_KEY_NAMES: string[] = ["model", "max_tokens", "max_completion_tokens", "stream", "stream_options", "messages", "system", "prompt", "input", "tools", "functions"];

function topKeyName(key: TopKey): string {
  return unchecked(TOP_KEY_NAMES[<i32>key]);
}

class RequestScan {
  /** Bit `1 << key` for each TopKey met. */
  seen: i32 = 0;
  /** Tokens known without the estimator: images and pre-tokenized input. */
  extraTokens: i32 = 0;

  constructor(public reader: JsonReader, public request: LlmRequest, public estimator: TokenEstimator) {}

  /**
   * A key this scan reads may appear once: with two, our reading and the model server's (which
   * takes one of them) could differ, so the body is refused as ambiguous.
   */
  firstTime(key: TopKey): bool {
    const bit = 1 << <i32>key;
    if ((this.seen & bit) != 0) {
      const name = topKeyName(key);
      this.invalid("duplicate key \"" + name + "\" makes the request ambiguous", name);
      return false;
    }
    this.seen |= bit;
    return true;
  }

  /** A value of the wrong type; when it is not even valid JSON, the syntax error is the better message. */
  wrongType(message: string, param: string): bool {
    if (this.reader.peek() == JsonKind.Invalid) return this.reader.skipValue();
    return this.invalid(message, param);
  }

  invalid(message: string, param: string): bool {
    if (this.request.error.length == 0) {
      this.request.error = message;
      this.request.errorParam = param;
    }
    this.reader.fail(message);
    return false;
  }
}

/** Reads an LLM request body; `request.error` tells when it is not a well-formed one. */
export function readLlmRequest(body: Uint8Array, shape: ApiShape, estimator: TokenEstimator): LlmRequest {
  const request = new LlmRequest();
  request.shape = shape;
  estimator.reset();
  const reader = new JsonReader(body);
  const scan = new RequestScan(reader, request, estimator);
  if (reader.peek() != JsonKind.Object) {
    scan.invalid(body.length == 0 ? "the request body is empty" : "the request body must be a JSON object", "");
    return request;
  }
  reader.enterObject();
  while (reader.nextMember()) {
    if (!readTopLevelMember(scan)) break;
  }
  reader.finish();
  if (reader.failed && request.error.length == 0) {
    request.error = "the request body is not valid JSON: " + reader.error + " at byte " + reader.errorAt.toString();
  }
  request.promptTokens = estimator.tokens() + scan.extraTokens;
  if (shape == ApiShape.OpenAIChat || shape == ApiShape.AnthropicMessages) {
    request.promptTokens += request.messages * TOKENS_PER_MESSAGE + TOKENS_REPLY_PRIMER;
  }
  return request;
}

function readTopLevelMember(scan: RequestScan): bool {
  const reader = scan.reader;
  const request = scan.request;
  const shape = request.shape;
  if (reader.keyIs("model")) {
    if (!scan.firstTime(TopKey.Model)) return false;
    const surrogates = reader.loneSurrogates;
    const model = reader.peek() == JsonKind.String ? reader.readString() : null;
    if (model == null) return scan.wrongType("model must be a string", "model");
    if (reader.loneSurrogates != surrogates) return scan.invalid("model holds a lone UTF-16 surrogate escape, which model servers read differently", "model");
    request.model = model;
    request.hasModel = true;
    return true;
  }
  const isMaxTokens = reader.keyIs("max_tokens");
  if (isMaxTokens || reader.keyIs("max_completion_tokens")) {
    const key = isMaxTokens ? TopKey.MaxTokens : TopKey.MaxCompletionTokens;
    const field = topKeyName(key);
    if (!scan.firstTime(key)) return false;
    if (reader.peek() == JsonKind.Null) return reader.readNull();
    if (reader.peek() != JsonKind.Number) return scan.wrongType(field + " must be a non-negative integer", field);
    const value = reader.readNumber();
    if (reader.failed) return false;
    if (!reader.isInteger || value < 0) return scan.invalid(field + " must be a non-negative integer", field);
    // Both fields may be present (OpenAI reads max_completion_tokens first); the larger one bounds the output.
    const tokens = value > 1e15 ? <i64>1e15 : <i64>value;
    request.outputBudgets.push(new OutputBudget(tokens, new JsonSpan(reader.lastValue.start, reader.lastValue.end)));
    if (tokens > request.maxTokens) {
      request.maxTokens = tokens;
      request.maxTokensField = field;
    }
    return true;
  }
  if (reader.keyIs("stream")) {
    if (!scan.firstTime(TopKey.Stream)) return false;
    if (reader.peek() == JsonKind.Null) return reader.readNull();
    const kind = reader.peek();
    if (kind != JsonKind.True && kind != JsonKind.False) return scan.wrongType("stream must be a boolean", "stream");
    request.stream = reader.readBool();
    return true;
  }
  if (reader.keyIs("stream_options")) {
    if (!scan.firstTime(TopKey.StreamOptions)) return false;
    return readStreamOptions(scan);
  }
  if (reader.keyIs("messages") && (shape == ApiShape.OpenAIChat || shape == ApiShape.AnthropicMessages)) {
    if (!scan.firstTime(TopKey.Messages)) return false;
    return readMessages(scan);
  }
  if (reader.keyIs("system") && shape == ApiShape.AnthropicMessages) {
    if (!scan.firstTime(TopKey.System)) return false;
    return readContent(scan, "system");
  }
  if (reader.keyIs("prompt") && shape == ApiShape.OpenAICompletions) {
    if (!scan.firstTime(TopKey.Prompt)) return false;
    return readTextOrTokenList(scan, "prompt");
  }
  if (reader.keyIs("input") && shape == ApiShape.OpenAIEmbeddings) {
    if (!scan.firstTime(TopKey.Input)) return false;
    return readTextOrTokenList(scan, "input");
  }
  const isTools = reader.keyIs("tools");
  if (isTools || reader.keyIs("functions")) {
    // Tool definitions reach the model as text; their keys and strings all count.
    if (!scan.firstTime(isTools ? TopKey.Tools : TopKey.Functions)) return false;
    return reader.skipValueInto(scan.estimator, true);
  }
  return reader.skipValue();
}

function readStreamOptions(scan: RequestScan): bool {
  const reader = scan.reader;
  if (reader.peek() == JsonKind.Null) return reader.readNull();
  if (reader.peek() != JsonKind.Object) return scan.wrongType("stream_options must be an object", "stream_options");
  reader.enterObject();
  let seen = false;
  while (reader.nextMember()) {
    if (reader.keyIs("include_usage")) {
      if (seen) return scan.invalid("duplicate key \"include_usage\" makes the request ambiguous", "stream_options.include_usage");
      seen = true;
      const kind = reader.peek();
      if (kind != JsonKind.True && kind != JsonKind.False) return scan.invalid("stream_options.include_usage must be a boolean", "stream_options.include_usage");
      scan.request.includeUsage = reader.readBool();
    } else if (!reader.skipValue()) {
      return false;
    }
  }
  return !reader.failed;
}

function readMessages(scan: RequestScan): bool {
  const reader = scan.reader;
  if (reader.peek() != JsonKind.Array) return scan.wrongType("messages must be an array", "messages");
  reader.enterArray();
  while (reader.nextElement()) {
    if (reader.peek() != JsonKind.Object) return scan.invalid("each message must be an object", "messages");
    scan.request.messages++;
    reader.enterObject();
    let sawContent = false;
    while (reader.nextMember()) {
      if (reader.keyIs("content")) {
        if (sawContent) return scan.invalid("duplicate key \"content\" in a message makes the request ambiguous", "messages");
        sawContent = true;
        if (!readContent(scan, "messages")) return false;
      } else if (reader.keyIs("tool_calls") || reader.keyIs("function_call") || reader.keyIs("name")) {
        if (!reader.skipValueInto(scan.estimator, false)) return false;
      } else if (!reader.skipValue()) {
        return false;
      }
    }
  }
  return !reader.failed;
}

/** Message content: a string, or a list of parts (text, images, tool use and results). */
function readContent(scan: RequestScan, param: string): bool {
  const reader = scan.reader;
  const kind = reader.peek();
  if (kind == JsonKind.String) return reader.readStringInto(scan.estimator);
  if (kind == JsonKind.Null) return reader.readNull();
  if (kind != JsonKind.Array) return scan.wrongType(param + " content must be a string or an array of parts", param);
  reader.enterArray();
  while (reader.nextElement()) {
    if (reader.peek() == JsonKind.String) {
      if (!reader.readStringInto(scan.estimator)) return false;
      continue;
    }
    if (reader.peek() != JsonKind.Object) return scan.invalid(param + " content parts must be objects", param);
    if (!readContentPart(scan, param)) return false;
  }
  return !reader.failed;
}

function readContentPart(scan: RequestScan, param: string): bool {
  const reader = scan.reader;
  reader.enterObject();
  let sawText = false;
  while (reader.nextMember()) {
    if (reader.keyIs("text")) {
      if (sawText) return scan.invalid("duplicate key \"text\" in a content part makes the request ambiguous", param);
      sawText = true;
      if (reader.peek() != JsonKind.String) return scan.invalid(param + " content part text must be a string", param);
      if (!reader.readStringInto(scan.estimator)) return false;
    } else if (reader.keyIs("image_url") || reader.keyIs("source") || reader.keyIs("input_audio")) {
      if (!reader.skipValue()) return false;
      scan.extraTokens += TOKENS_PER_IMAGE;
    } else if (reader.keyIs("input")) {
      // Anthropic tool_use input: arbitrary JSON the model wrote, counted as text.
      if (!reader.skipValueInto(scan.estimator, true)) return false;
    } else if (reader.keyIs("content")) {
      // Anthropic tool_result content: a string or nested parts.
      if (!readContent(scan, param)) return false;
    } else if (!reader.skipValue()) {
      return false;
    }
  }
  return !reader.failed;
}


/** A prompt or embedding input: a string, a list of strings, or already-tokenized integer lists. */
function readTextOrTokenList(scan: RequestScan, param: string): bool {
  const reader = scan.reader;
  const kind = reader.peek();
  if (kind == JsonKind.String) return reader.readStringInto(scan.estimator);
  if (kind != JsonKind.Array) return scan.wrongType(param + " must be a string or an array", param);
  reader.enterArray();
  while (reader.nextElement()) {
    const item = reader.peek();
    if (item == JsonKind.String) {
      if (!reader.readStringInto(scan.estimator)) return false;
    } else if (item == JsonKind.Number) {
      reader.readNumber();
      scan.extraTokens++;
    } else if (item == JsonKind.Array) {
      reader.enterArray();
      while (reader.nextElement()) {
        if (reader.peek() != JsonKind.Number) return scan.invalid(param + " token lists must hold integers", param);
        reader.readNumber();
        scan.extraTokens++;
      }
    } else {
      return scan.invalid(param + " items must be strings or token lists", param);
    }
  }
  return !reader.failed;
}
