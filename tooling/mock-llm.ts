// A mock model server speaking the OpenAI and Anthropic HTTP APIs, with real token counts, so
// filters in front of it see realistic bodies and streams. Per-request x-mock-* headers (or
// setDefault) inject latency, errors and connection resets.
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";

export interface MockBehavior {
  latencyMs?: number;
  chunkDelayMs?: number;
  status?: number;
  /** Destroy the connection after this many SSE events (streams) or body bytes; 0 = before headers. */
  resetAfter?: number;
  completionTokens?: number;
  model?: string;
  /** What GET /v1/models lists (x-mock-models, comma-separated; "" lists nothing); default MODELS and `model`. */
  models?: string[];
  /** Also list this many generated models, `mock-model-<n>` (x-mock-models-count): a list as large as a test needs. */
  modelsCount?: number;
  /**
   * Write the list in this many pieces, chunked, without content-length (x-mock-models-chunks),
   * chunkDelayMs apart: the opening, then the entries in equal parts.
   */
  modelsChunks?: number;
  /** Answer a client that sends anthropic-version in OpenAI's shape anyway, as OpenAI-compatible servers do (x-mock-models-shape: openai). */
  modelsShape?: "openai";
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  authority: string;
  body: string;
  json: unknown;
  at: number;
}

export interface MockLlm {
  port: number;
  url: string;
  name: string;
  requests: RecordedRequest[];
  reset(): void;
  setDefault(behavior: MockBehavior): void;
  close(): Promise<void>;
}

type Api = "openai" | "anthropic";
type Json = Record<string, any>;

// Each is exactly one o200k_base token, and so is every join of them: the completion's token count
// is the number of words, whichever the tokenizer used to check.
const WORDS = [" the", " mesh", " routes", " every", " request", " through", " a", " proxy", " that", " counts", " tokens", " and", " keeps", " models", " safe", " today"];
export const completionText = (n: number) => Array.from({ length: n }, (_, i) => WORDS[i % WORDS.length]).join("");
const MAX_DEFAULT_TOKENS = 16;

// ---------------------------------------------------------------- token counting

const textOf = (content: unknown): string[] => {
  if (typeof content === "string") return [content];
  if (!Array.isArray(content)) return [];
  return content.flatMap((part) => (part && typeof part.text === "string" ? [part.text] : []));
};

const countAll = (texts: string[]) => texts.reduce((sum, text) => sum + countTokens(text), 0);

/** Prompt tokens as the mock bills them: the sum over each text piece of the request, o200k_base. */
export function countPromptTokens(path: string, body: Json): number {
  switch (path) {
    case "/v1/chat/completions":
      return countAll((body.messages ?? []).flatMap((m: Json) => textOf(m?.content)));
    case "/v1/messages":
      return countAll([...textOf(body.system), ...(body.messages ?? []).flatMap((m: Json) => textOf(m?.content))]);
    case "/v1/completions":
      return countInputs(body.prompt);
    case "/v1/embeddings":
      return countInputs(body.input);
    default:
      return 0;
  }
}

/** prompt/input: a string, strings, or already-tokenized arrays of numbers. */
function countInputs(input: unknown): number {
  if (typeof input === "string") return countTokens(input);
  if (!Array.isArray(input)) return 0;
  if (input.every((x) => typeof x === "number")) return input.length;
  return input.reduce((sum: number, item) => sum + countInputs(item), 0);
}

const inputList = (input: unknown): unknown[] =>
  Array.isArray(input) && !input.every((x) => typeof x === "number") ? input : [input];

// ---------------------------------------------------------------- errors

const ERROR_TYPES: Record<Api, Record<number, string>> = {
  openai: { 400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_exceeded", 500: "server_error", 503: "server_error" },
  anthropic: { 400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error" },
};

function errorBody(api: Api, status: number, message: string): Json {
  const type = ERROR_TYPES[api][status] ?? (status >= 500 ? ERROR_TYPES[api][500] : ERROR_TYPES[api][400]);
  return api === "anthropic"
    ? { type: "error", error: { type, message } }
    : { error: { message, type, param: null, code: type } };
}

class BadRequest extends Error {}

// ---------------------------------------------------------------- server

const sleep = (ms: number) => (ms > 0 ? new Promise((done) => setTimeout(done, ms)) : Promise.resolve());

function headerNumber(req: IncomingMessage, name: string): number | undefined {
  const raw = req.headers[name];
  if (typeof raw !== "string" || raw.trim() === "") return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : undefined;
}

function behaviorOf(req: IncomingMessage, defaults: MockBehavior): MockBehavior {
  const model = req.headers["x-mock-model"];
  const models = req.headers["x-mock-models"];
  const shape = req.headers["x-mock-models-shape"];
  return {
    models: typeof models === "string" ? models.split(",").filter(Boolean) : defaults.models,
    modelsCount: headerNumber(req, "x-mock-models-count") ?? defaults.modelsCount,
    modelsChunks: headerNumber(req, "x-mock-models-chunks") ?? defaults.modelsChunks,
    modelsShape: shape === "openai" ? "openai" : defaults.modelsShape,
    latencyMs: headerNumber(req, "x-mock-latency-ms") ?? defaults.latencyMs,
    chunkDelayMs: headerNumber(req, "x-mock-chunk-delay-ms") ?? defaults.chunkDelayMs,
    status: headerNumber(req, "x-mock-status") ?? defaults.status,
    resetAfter: headerNumber(req, "x-mock-reset-after") ?? defaults.resetAfter,
    completionTokens: headerNumber(req, "x-mock-completion-tokens") ?? defaults.completionTokens,
    model: typeof model === "string" && model ? model : defaults.model,
  };
}

/**
 * Kills the connection the way a crashing model server does. Before anything was sent, a RST.
 * After some bytes, a plain close once they are flushed: Linux drops unread data on a RST, so
 * Envoy would never see the partial response the test asked for.
 */
function abort(res: ServerResponse): void {
  const socket = res.socket as (ServerResponse["socket"] & { resetAndDestroy?: () => void }) | null;
  if (!socket) return;
  if (!res.headersSent && socket.resetAndDestroy) socket.resetAndDestroy();
  else socket.destroy();
}

/** Writes a response honouring resetAfter (as body bytes) and the latency already waited. */
function sendJson(res: ServerResponse, status: number, body: Json, behavior: MockBehavior, extra: Record<string, string> = {}): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { "content-type": "application/json", "content-length": bytes.length, ...extra });
  if (behavior.resetAfter !== undefined) {
    res.write(bytes.subarray(0, behavior.resetAfter), () => abort(res));
    return;
  }
  res.end(bytes);
}

/** Streams SSE events with chunkDelayMs between them; resetAfter counts events. */
async function sendSse(res: ServerResponse, events: Array<{ event?: string; data: string }>, behavior: MockBehavior): Promise<void> {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  res.flushHeaders();
  let flushed: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < events.length; i++) {
    if (behavior.resetAfter !== undefined && i >= behavior.resetAfter) {
      await flushed;
      return abort(res);
    }
    if (i > 0) await sleep(behavior.chunkDelayMs ?? 0);
    if (res.destroyed) return;
    const { event, data } = events[i];
    flushed = new Promise((done) => res.write(`${event ? `event: ${event}\n` : ""}data: ${data}\n\n`, done));
  }
  res.end();
}

interface Exchange {
  path: string;
  body: Json;
  model: string;
  promptTokens: number;
  completionTokens: number;
  text: string;
  finish: "stop" | "length";
  id: string;
  created: number;
}

function exchange(path: string, body: Json, behavior: MockBehavior, seq: number): Exchange {
  const limit = body.max_completion_tokens ?? body.max_tokens;
  const maxTokens = typeof limit === "number" && limit >= 0 ? limit : MAX_DEFAULT_TOKENS;
  const completionTokens = Math.max(0, Math.floor(behavior.completionTokens ?? Math.min(maxTokens, MAX_DEFAULT_TOKENS)));
  return {
    path,
    body,
    model: behavior.model ?? (typeof body.model === "string" ? body.model : "mock-model"),
    promptTokens: countPromptTokens(path, body),
    completionTokens,
    text: completionText(completionTokens),
    finish: completionTokens >= maxTokens ? "length" : "stop",
    id: `mock-${seq}`,
    created: Math.floor(Date.now() / 1000),
  };
}

function requireField(body: Json, field: string, check: (v: unknown) => boolean, what: string): void {
  if (!check(body[field])) throw new BadRequest(`'${field}' is required and must be ${what}`);
}

function validate(path: string, body: Json): void {
  switch (path) {
    case "/v1/chat/completions":
    case "/v1/messages":
      return requireField(body, "messages", Array.isArray, "an array");
    case "/v1/completions":
      return requireField(body, "prompt", (v) => typeof v === "string" || Array.isArray(v), "a string or an array");
    case "/v1/embeddings":
      return requireField(body, "input", (v) => typeof v === "string" || Array.isArray(v), "a string or an array");
  }
}

const usageOpenAi = (x: Exchange) => ({ prompt_tokens: x.promptTokens, completion_tokens: x.completionTokens, total_tokens: x.promptTokens + x.completionTokens });
const words = (x: Exchange) => Array.from({ length: x.completionTokens }, (_, i) => WORDS[i % WORDS.length]);
const sse = (data: unknown, event?: string) => ({ event, data: typeof data === "string" ? data : JSON.stringify(data) });

function chatCompletion(x: Exchange): Json {
  return {
    id: `chatcmpl-${x.id}`,
    object: "chat.completion",
    created: x.created,
    model: x.model,
    choices: [{ index: 0, message: { role: "assistant", content: x.text, refusal: null }, logprobs: null, finish_reason: x.finish }],
    usage: usageOpenAi(x),
  };
}

function chatStream(x: Exchange) {
  const includeUsage = x.body.stream_options?.include_usage === true;
  // With include_usage, OpenAI puts "usage": null on every chunk but the last.
  const chunk = (choices: Json[]) => ({
    id: `chatcmpl-${x.id}`,
    object: "chat.completion.chunk",
    created: x.created,
    model: x.model,
    choices,
    ...(includeUsage ? { usage: null } : {}),
  });
  const events = [
    sse(chunk([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }])),
    ...words(x).map((w) => sse(chunk([{ index: 0, delta: { content: w }, logprobs: null, finish_reason: null }]))),
    sse(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: x.finish }])),
  ];
  if (includeUsage) events.push(sse({ ...chunk([]), usage: usageOpenAi(x) }));
  events.push(sse("[DONE]"));
  return events;
}

function completion(x: Exchange): Json {
  return {
    id: `cmpl-${x.id}`,
    object: "text_completion",
    created: x.created,
    model: x.model,
    choices: [{ text: x.text, index: 0, logprobs: null, finish_reason: x.finish }],
    usage: usageOpenAi(x),
  };
}

function completionStream(x: Exchange) {
  const includeUsage = x.body.stream_options?.include_usage === true;
  const chunk = (choices: Json[]) => ({ id: `cmpl-${x.id}`, object: "text_completion", created: x.created, model: x.model, choices, ...(includeUsage ? { usage: null } : {}) });
  const events = [
    ...words(x).map((w) => sse(chunk([{ text: w, index: 0, logprobs: null, finish_reason: null }]))),
    sse(chunk([{ text: "", index: 0, logprobs: null, finish_reason: x.finish }])),
  ];
  if (includeUsage) events.push(sse({ ...chunk([]), usage: usageOpenAi(x) }));
  events.push(sse("[DONE]"));
  return events;
}

/** A deterministic unit-ish vector per input, so equal inputs embed equally. */
function embed(input: unknown, dims: number): number[] {
  const text = typeof input === "string" ? input : JSON.stringify(input);
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619) >>> 0;
  return Array.from({ length: dims }, (_, i) => {
    h = Math.imul(h ^ (h >>> 15), 2246822507 + i) >>> 0;
    return Math.round(((h / 0xffffffff) * 2 - 1) * 1e6) / 1e6;
  });
}

function embeddings(x: Exchange): Json {
  const dims = typeof x.body.dimensions === "number" && x.body.dimensions > 0 ? Math.min(x.body.dimensions, 4096) : 8;
  const base64 = x.body.encoding_format === "base64";
  return {
    object: "list",
    data: inputList(x.body.input).map((input, index) => {
      const vector = embed(input, dims);
      const embedding = base64 ? Buffer.from(new Float32Array(vector).buffer).toString("base64") : vector;
      return { object: "embedding", index, embedding };
    }),
    model: x.model,
    usage: { prompt_tokens: x.promptTokens, total_tokens: x.promptTokens },
  };
}

const stopReason = (x: Exchange) => (x.finish === "length" ? "max_tokens" : "end_turn");

function message(x: Exchange): Json {
  return {
    id: `msg_${x.id}`,
    type: "message",
    role: "assistant",
    model: x.model,
    content: [{ type: "text", text: x.text }],
    stop_reason: stopReason(x),
    stop_sequence: null,
    usage: { input_tokens: x.promptTokens, output_tokens: x.completionTokens },
  };
}

function messageStream(x: Exchange) {
  const start = { ...message(x), content: [], stop_reason: null, usage: { input_tokens: x.promptTokens, output_tokens: 1 } };
  return [
    sse({ type: "message_start", message: start }, "message_start"),
    sse({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }, "content_block_start"),
    ...words(x).map((w) => sse({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: w } }, "content_block_delta")),
    sse({ type: "content_block_stop", index: 0 }, "content_block_stop"),
    sse({ type: "message_delta", delta: { stop_reason: stopReason(x), stop_sequence: null }, usage: { output_tokens: x.completionTokens } }, "message_delta"),
    sse({ type: "message_stop" }, "message_stop"),
  ];
}

const HANDLERS: Record<string, { api: Api; json: (x: Exchange) => Json; stream?: (x: Exchange) => Array<{ event?: string; data: string }> }> = {
  "/v1/chat/completions": { api: "openai", json: chatCompletion, stream: chatStream },
  "/v1/completions": { api: "openai", json: completion, stream: completionStream },
  "/v1/embeddings": { api: "openai", json: embeddings },
  "/v1/messages": { api: "anthropic", json: message, stream: messageStream },
};

const MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-3-5-sonnet-latest"];
const MODEL_CREATED = 1700000000;

/**
 * GET /v1/models as the vendor the client speaks to answers it: Anthropic's shape (`type`,
 * `display_name`, `created_at`, paging cursors) to a client that sends anthropic-version, unless the
 * behaviour says to answer like an OpenAI-compatible server; OpenAI's otherwise.
 */
function modelList(req: IncomingMessage, behavior: MockBehavior): Json {
  const generated = Array.from({ length: behavior.modelsCount ?? 0 }, (_, i) => `mock-model-${String(i).padStart(6, "0")}`);
  const listed = behavior.models ?? [...MODELS, ...(behavior.model ? [behavior.model] : [])];
  const ids = [...new Set([...listed, ...generated])];
  if (req.headers["anthropic-version"] !== undefined && behavior.modelsShape !== "openai") {
    const data = ids.map((id) => ({ type: "model", id, display_name: `Mock ${id}`, created_at: new Date(MODEL_CREATED * 1000).toISOString() }));
    return { data, has_more: false, first_id: ids[0] ?? null, last_id: ids.at(-1) ?? null };
  }
  return { object: "list", data: ids.map((id) => ({ id, object: "model", created: MODEL_CREATED, owned_by: "mock" })) };
}

/**
 * Writes a list in `pieces` chunks, chunked (no content-length), `delayMs` apart, as a server that
 * streams its list does: first the opening up to the entries, then the entries in equal parts.
 */
async function sendListInPieces(res: ServerResponse, body: Json, pieces: number, delayMs: number): Promise<void> {
  const text = Buffer.from(JSON.stringify(body));
  const opening = text.indexOf('"data":[') + '"data":['.length;
  const size = Math.ceil((text.length - opening) / Math.max(pieces - 1, 1));
  const parts = [text.subarray(0, opening)];
  for (let at = opening; at < text.length; at += size) parts.push(text.subarray(at, at + size));
  res.writeHead(200, { "content-type": "application/json" });
  for (const [i, part] of parts.entries()) {
    if (i > 0) await sleep(delayMs);
    if (res.destroyed) return;
    await new Promise((done) => res.write(part, done));
  }
  res.end();
}

/** `host`: the address to listen on, loopback unless a test's pod network must reach it. */
export async function startMockLlm(options: { port?: number; name?: string; host?: string } = {}): Promise<MockLlm> {
  const name = options.name ?? "mock-llm";
  const host = options.host ?? "127.0.0.1";
  const requests: RecordedRequest[] = [];
  let defaults: MockBehavior = {};
  let seq = 0;

  async function handle(req: IncomingMessage, res: ServerResponse, raw: string): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    let json: unknown;
    try {
      json = raw ? JSON.parse(raw) : undefined;
    } catch {
      json = undefined;
    }
    requests.push({ method: req.method ?? "", path, headers: { ...req.headers }, authority: req.headers.host ?? "", body: raw, json, at: Date.now() });

    const behavior = behaviorOf(req, defaults);
    if (behavior.resetAfter === 0) return abort(res);
    await sleep(behavior.latencyMs ?? 0);

    const handler = HANDLERS[path];
    const api: Api = handler?.api ?? (path.startsWith("/v1/messages") ? "anthropic" : "openai");
    const fail = (status: number, msg: string) =>
      sendJson(res, status, errorBody(api, status, msg), behavior, status === 429 ? { "retry-after": "1" } : {});

    if (behavior.status !== undefined && behavior.status !== 200) return fail(behavior.status, `mock error: status ${behavior.status} requested`);

    if (req.method === "GET" && path === "/healthz") return sendJson(res, 200, { status: "ok", name }, behavior);
    if (req.method === "GET" && path === "/v1/models") {
      const list = modelList(req, behavior);
      if (behavior.modelsChunks !== undefined && behavior.modelsChunks > 1) return sendListInPieces(res, list, behavior.modelsChunks, behavior.chunkDelayMs ?? 0);
      return sendJson(res, 200, list, behavior);
    }
    if (req.method === "GET" && path.startsWith("/v1/models/")) {
      const id = decodeURIComponent(path.slice("/v1/models/".length));
      const entry = (modelList(req, behavior).data as Json[]).find((m) => m.id === id);
      return entry ? sendJson(res, 200, entry, behavior) : fail(404, `The model '${id}' does not exist`);
    }
    if (!handler) return fail(404, `no route ${req.method} ${path}`);
    if (req.method !== "POST") return fail(405, `${path} needs POST`);

    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      return fail(400, raw ? "request body is not a valid JSON object" : "request body is empty");
    }
    try {
      validate(path, json as Json);
    } catch (err) {
      if (err instanceof BadRequest) return fail(400, err.message);
      throw err;
    }
    const x = exchange(path, json as Json, behavior, ++seq);
    if ((json as Json).stream === true && handler.stream) return sendSse(res, handler.stream(x), behavior);
    return sendJson(res, 200, handler.json(x), behavior);
  }

  const server = createServer((req, res) => {
    res.setHeader("x-mock-served-by", name);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", () => res.destroy());
    res.on("error", () => undefined);
    req.on("end", () => {
      handle(req, res, Buffer.concat(chunks).toString("utf8")).catch((err: Error) => {
        // A mock bug must show up as a 500 in the test, not take the server down.
        if (!res.headersSent) sendJson(res, 500, errorBody("openai", 500, `mock failure: ${err.message}`), {});
        else res.destroy();
      });
    });
  });
  // Envoy keeps upstream connections for an hour; a shorter Node idle timeout would race with
  // reuse and surface as sporadic 503s.
  server.keepAliveTimeout = 600_000;

  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(options.port ?? 0, host, () => ok());
  });
  const port = (server.address() as { port: number }).port;

  return {
    port,
    url: `http://${host}:${port}`,
    name,
    requests,
    reset: () => void requests.splice(0),
    setDefault: (behavior) => void (defaults = { ...behavior }),
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}
