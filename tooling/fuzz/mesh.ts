// The whole llm-mesh chain as the fuzz run, the internal-header test and the soak run it
// (envoy/fuzz.yaml): plugin configs with known limits, and the invariant every request that reached
// the upstream must satisfy under them.
import type { RecordedRequest } from "../mock-llm.ts";
import { settlesAt, type StatsSource } from "../stats.ts";
import type { Shape } from "./bodies.ts";
import type { RequestReader } from "./reader.ts";

export const OUTPUT_LIMIT = 4096;
export const MAX_BODY_BYTES = 1048576;

export const ADMISSION_CONFIG = {
  hold_headers: true,
  models: {
    default: { max_body_bytes: MAX_BODY_BYTES, max_prompt_tokens: 8000, max_output_tokens: OUTPUT_LIMIT, output_limit_action: "clamp" },
    "gpt-4o": {},
    "gpt-4o-mini": { max_prompt_tokens: 16000 },
    "claude-3-5-haiku*": { output_limit_action: "reject" },
    "llama-3*": { max_prompt_tokens: 4000, tokenizer: "cl100k" },
    "text-embedding-3-small": {},
  },
  unknown_model: "reject",
  invalid_body: "reject",
};

/** Generous per-tenant limits, plus two tenants whose small limits make the throttle refuse and queue. */
export const THROTTLE_CONFIG = {
  rules: [
    {
      name: "tight",
      match: { headers: [{ name: "x-tenant", exact: "tight" }] },
      key: ["global"],
      limits: { requests_per_second: 5 },
      action: "reject",
    },
    {
      name: "queued",
      match: { headers: [{ name: "x-tenant", exact: "queued" }] },
      key: ["global"],
      limits: { max_in_flight: 2 },
      action: "queue",
      queue: { max_wait_ms: 3000, max_length: 50 },
    },
    {
      name: "tenants",
      key: ["header:x-tenant"],
      limits: { requests_per_second: 1_000_000, tokens_per_minute: 1_000_000_000_000, max_in_flight: 100_000 },
      action: "reject",
    },
  ],
};

export const METRICS_CONFIG = {
  models: ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku*", "llama-3*", "text-embedding-3-small"],
  tenant_header: "x-tenant",
  records: true,
};

/** One target: everything the router sees goes to the primary, through a weighted rule. */
export const ROUTER_CONFIG = {
  targets: { primary: {} },
  rules: [{ name: "all-gpt", match: { models: ["gpt-4o*"] }, weights: { primary: 100 } }],
  record: { enabled: true },
};

export const MESH_VARS = {
  ADMISSION_CONFIG,
  THROTTLE_CONFIG,
  METRICS_CONFIG,
  ROUTER_CONFIG,
};

/** The endpoints the mock serves, by exact path: only requests to these are model work. */
export const SERVED: Record<string, Shape> = {
  "/v1/chat/completions": "openai.chat",
  "/v1/completions": "openai.completions",
  "/v1/embeddings": "openai.embeddings",
  "/v1/messages": "anthropic.messages",
};

/** The prompt limit admission applies to a model, or undefined when the model may not pass. */
export function promptLimit(model: string): number | undefined {
  if (model === "gpt-4o" || model === "text-embedding-3-small") return 8000;
  if (model === "gpt-4o-mini") return 16000;
  if (model.startsWith("claude-3-5-haiku")) return 8000;
  if (model.startsWith("llama-3")) return 4000;
  return undefined;
}

/** A request header as text: Node hands header bytes over as latin1, the filters write UTF-8. */
const header = (r: RecordedRequest, name: string): string | undefined => {
  const value = r.headers[name];
  const joined = Array.isArray(value) ? value.join(", ") : value;
  return joined === undefined ? undefined : Buffer.from(joined, "latin1").toString("utf8");
};

/** The model as the filters forward it in x-llm-model (request-facts.ts headerSafe). */
const headerSafe = (model: string): string => model.slice(0, 256).replace(/[\u0000-\u001f\u007f]/g, "?");

/**
 * What is wrong with a request the upstream received, under the policy above; empty when
 * nothing is. A model request must be plain JSON that the filters' reader accepts, name an allowed
 * model, stay within the limits, and carry facts that match its body.
 */
export function upstreamViolations(r: RecordedRequest, reader: RequestReader): string[] {
  const shape = SERVED[r.path];
  if (r.method !== "POST" || !shape) return [];
  const out: string[] = [];
  const encoding = header(r, "content-encoding");
  if (encoding !== undefined && encoding.trim().toLowerCase() !== "identity") out.push(`content-encoding ${encoding} reached the upstream`);
  const bytes = Buffer.from(r.body, "utf8");
  if (bytes.length > MAX_BODY_BYTES) out.push(`body of ${bytes.length} bytes`);
  const json = r.json as Record<string, unknown> | undefined;
  if (json === undefined || json === null || typeof json !== "object" || Array.isArray(json)) {
    out.push("body is not a JSON object");
    return out;
  }
  const reading = reader.read(bytes, shape);
  if (!reading.ok) out.push(`the filters' reader refuses the forwarded body: ${reading.error}`);
  const model = json.model;
  if (typeof model !== "string" || promptLimit(model) === undefined) out.push(`model ${JSON.stringify(model)} is not allowed`);
  else if (model !== reading.model) out.push(`JSON.parse reads model ${JSON.stringify(model)}, the filters ${JSON.stringify(reading.model)}`);
  for (const field of ["max_tokens", "max_completion_tokens"]) {
    const value = json[field];
    if (value !== undefined && value !== null && !(typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= OUTPUT_LIMIT)) {
      out.push(`${field} ${JSON.stringify(value)} is over the limit or not an integer`);
    }
  }
  const expectHeader = (name: string, value: string | undefined) => {
    if (header(r, name) !== value) out.push(`${name}: ${JSON.stringify(header(r, name))}, expected ${JSON.stringify(value)}`);
  };
  expectHeader("x-llm-api", shape);
  expectHeader("x-llm-model", typeof model === "string" ? headerSafe(model) : undefined);
  expectHeader("x-llm-max-tokens", reading.maxTokens >= 0 ? String(reading.maxTokens) : undefined);
  expectHeader("x-llm-stream", String(json.stream === true));
  expectHeader("x-llm-route", "primary");
  const prompt = Number(header(r, "x-llm-prompt-tokens"));
  const limit = typeof model === "string" ? promptLimit(model) : undefined;
  if (!Number.isInteger(prompt) || prompt < 0) out.push(`x-llm-prompt-tokens ${header(r, "x-llm-prompt-tokens")}`);
  else if (limit !== undefined && prompt > limit) out.push(`prompt estimate ${prompt} over the limit ${limit}`);
  // llama models are estimated again with cl100k, which the reader here does not do.
  else if (typeof model === "string" && !model.startsWith("llama-3") && prompt !== reading.promptTokens) {
    out.push(`x-llm-prompt-tokens ${prompt}, the reader estimates ${reading.promptTokens}`);
  }
  return out;
}

/** Envoy log lines that mean a filter trapped or its VM failed. */
export const VM_FAILURE = /wasm log.*abort|Function: \S+ failed|unreachable|wasm_fail_stream|Plugin configured to fail closed|VM failed|RuntimeError/i;

/** Stats that count what a request holds while it is in Envoy: all must be back at zero when idle. */
export const IN_FLIGHT_STATS = /^(http\.llm\.downstream_rq_active|wasmcustom\..*(in_flight|waiting|tokens_reserved|active_requests).*)$/;

/** The IN_FLIGHT_STATS not at zero, as name=value. */
export async function heldInFlight(envoy: StatsSource): Promise<string[]> {
  const stats = await envoy.stats();
  return [...stats].filter(([name, value]) => IN_FLIGHT_STATS.test(name) && value !== 0).map(([n, v]) => `${n}=${v}`);
}

/**
 * Waits until Envoy and every filter gauge hold nothing, and still nothing a flush period later:
 * the filters' gauges reach Envoy in batches (tooling/stats.ts), so a leak shows only then.
 */
export function settledInFlight(envoy: StatsSource, timeoutMs = 5000): Promise<void> {
  return settlesAt(() => heldInFlight(envoy), [], "what Envoy and the filters hold", timeoutMs);
}
