// The names llm-mesh exports metrics under, and how labels travel through an ABI that has none.
//
// proxy-wasm can only define a metric by name, so each label is written into the name the way
// Istio writes its own (`key=.=value;.;`), and Envoy's `stats_config.stats_tags` regexes
// `(key=\.=(.*?);\.;)` cut them out again as Prometheus labels (Istio's
// `sidecar.istio.io/extraStatTags` generates exactly these regexes). The base name comes first,
// so `wasmcustom.<base>` is a prefix that selects one metric: Istio's histogram-bucket annotation
// can only match prefixes.

// ---- base names (OpenTelemetry GenAI conventions as Prometheus names) ----

/** Counter: every LLM API request the filter saw, answered or not. */
export const REQUESTS = "gen_ai_server_requests_total";
/** Gauge: requests that have started and not yet finished. */
export const ACTIVE_REQUESTS = "gen_ai_server_active_requests";
/** Histogram, milliseconds: from the request's first byte at Envoy to the end of the response. */
export const REQUEST_DURATION = "gen_ai_server_request_duration";
/** Histogram, milliseconds: until the first streamed event that carries content. */
export const TIME_TO_FIRST_TOKEN = "gen_ai_server_time_to_first_token";
/** Histogram, milliseconds per token: streaming time after the first token over the tokens after it. */
export const TIME_PER_OUTPUT_TOKEN = "gen_ai_server_time_per_output_token";
/** Histogram, tokens per request, by gen_ai_token_type. */
export const TOKEN_USAGE = "gen_ai_client_token_usage";
/** Counter: exact token totals (Envoy's histogram sums are approximate), by gen_ai_token_type. */
export const USAGE_TOKENS = "gen_ai_usage_tokens_total";
/** Counter: metric updates skipped because a worker reached its series limit. */
export const SERIES_DROPPED = "llm_mesh_metric_series_dropped_total";

// ---- label keys ----

export const LABEL_REQUEST_MODEL = "gen_ai_request_model";
export const LABEL_RESPONSE_MODEL = "gen_ai_response_model";
export const LABEL_TOKEN_TYPE = "gen_ai_token_type";
export const LABEL_API = "llm_api";
export const LABEL_ROUTE = "llm_route";
export const LABEL_STATUS_CLASS = "llm_status_class";
export const LABEL_OUTCOME = "llm_outcome";
export const LABEL_TENANT = "llm_tenant";
/** The llm-throttle rule a global-budget metric is about. */
export const LABEL_RULE = "llm_rule";
/** A global rule's on_service_failure a request was decided by: local, allow, deny. */
export const LABEL_FAILURE_MODE = "llm_failure_mode";

/** Every label key, in the order names carry them; envoy/ and docs/metrics.md list the same. */
export const LABEL_KEYS: string[] = [
  LABEL_REQUEST_MODEL, LABEL_RESPONSE_MODEL, LABEL_TOKEN_TYPE, LABEL_API,
  LABEL_ROUTE, LABEL_STATUS_CLASS, LABEL_OUTCOME, LABEL_TENANT, LABEL_RULE, LABEL_FAILURE_MODE,
];

export const TOKEN_TYPE_INPUT = "input";
export const TOKEN_TYPE_OUTPUT = "output";

/** The value for a label whose real value may not have its own series. */
export const LABEL_OTHER = "other";
/** The value for a label that has no value on this request (no model, no response). */
export const LABEL_NONE = "none";

export const MAX_LABEL_VALUE_LENGTH: i32 = 96;

function labelSafeChar(c: i32): bool {
  if (c >= 0x61 && c <= 0x7a) return true; // a-z
  if (c >= 0x41 && c <= 0x5a) return true; // A-Z
  if (c >= 0x30 && c <= 0x39) return true; // 0-9
  // - . _ / @ + :  (":" for ids like Bedrock's "anthropic.claude-v2:1", which Envoy keeps as is)
  return c == 0x2d || c == 0x2e || c == 0x5f || c == 0x2f || c == 0x40 || c == 0x2b || c == 0x3a;
}

/**
 * Whether text can be a label value as it is: the model-name alphabet, which leaves out what would
 * break the encoding (`;`, `=`) or need escaping. Anything else is reported as `other` rather than
 * rewritten, so two names never end up sharing one rewritten value. `*` is kept for the prefix
 * patterns an operator configures.
 */
export function isLabelSafe(text: string): bool {
  if (text.length == 0 || text.length > MAX_LABEL_VALUE_LENGTH) return false;
  for (let i = 0; i < text.length; i++) {
    if (!labelSafeChar(text.charCodeAt(i))) return false;
  }
  return true;
}

/** A metric name under construction: the base, then one `key=.=value;.;` per label. */
export class TaggedName {
  private text: string;

  constructor(base: string) {
    this.text = base;
  }

  /** Values must already be label-safe (or fixed vocabulary); callers map the rest to `other`. */
  tag(key: string, value: string): TaggedName {
    this.text += key + "=.=" + value + ";.;";
    return this;
  }

  toString(): string {
    return this.text;
  }
}

/** The Envoy `stats_tags` regex that turns a label key back into a Prometheus label. */
export function tagRegex(key: string): string {
  return "(" + key + "=\\.=(.*?);\\.;)";
}
