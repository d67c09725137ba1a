// Every filter-state name llm-mesh sets or reads, in one place: a name one filter writes and another
// reads must be spelt alike by both. Envoy keeps each as `wasm.<name>`; access logs print them with
// %FILTER_STATE(wasm.<name>:PLAIN)%, and so do the custom tags that put them on trace spans (the
// envoy/*.yaml configs, k8s/base/telemetry.yaml and the docs spell them out too).
//
// Each is @lazy: AssemblyScript otherwise writes every top-level string of an imported file into the
// module's memory, and each filter would carry the names only the others use (800 bytes or so).

// ---- the request's facts (request-facts.ts), from the first filter that reads the body ----

@lazy export const FACT_MODEL = "llm_mesh.model";
@lazy export const FACT_API = "llm_mesh.api";
@lazy export const FACT_PROMPT_TOKENS = "llm_mesh.prompt_tokens";
@lazy export const FACT_MAX_TOKENS = "llm_mesh.max_tokens";
@lazy export const FACT_STREAM = "llm_mesh.stream";
/** OpenTelemetry's gen_ai.operation.name and gen_ai.provider.name of the request's API, for spans. */
@lazy export const FACT_OPERATION = "llm_mesh.operation";
@lazy export const FACT_PROVIDER = "llm_mesh.provider";
/**
 * All of the above in one value, "<api>,<prompt>,<max>,<stream 0|1>,<model>", which the filters
 * read: one host call instead of five. Access logs print the separate ones.
 */
@lazy export const FACT_ALL = "llm_mesh.facts";

// ---- each filter's decision, for access logs and the metrics filter ----

/** admitted | clamped | passed_through | rejected:<code>. */
@lazy export const FACT_ADMISSION = "llm_mesh.admission";
/** admitted | admitted_after_wait | waiting:<rule> | redirected:<rule> | rejected:<rule>. */
@lazy export const FACT_THROTTLE = "llm_mesh.throttle";
/** How long a queued request waited before it was admitted, ms; unset for one that did not wait. */
@lazy export const FACT_THROTTLE_WAIT = "llm_mesh.throttle_wait_ms";
/** The router's decision, e.g. "target=canary by=sticky rule=gpt-4o-split". */
@lazy export const FACT_ROUTER = "llm_mesh.router";
/** The router's comparison record (router/record.ts), as JSON. */
@lazy export const FACT_RECORD = "llm_mesh.record";
/** Which path the request took (route.ts): primary, canary, shadow, fallback or a target's name. */
@lazy export const FACT_ROUTE = "llm_mesh.route";

// ---- hand-overs between filters (usage-handoff.ts, models-api.ts) ----

/** The metrics filter follows the response, counting unreported text with the tokenizer family named. */
@lazy export const FACT_USAGE_TRACKED = "llm_mesh.usage_tracked";
/** The answer's usage as the metrics filter read it, for the throttle filter. */
@lazy export const FACT_USAGE = "llm_mesh.usage";
/**
 * Model names the router sends upstream in place of the client's (a target's or the shadow's
 * `rewrite_model`), newline-separated: the router leaves them on a list request for admission,
 * which sees the answer after it and keeps them out of the list.
 */
@lazy export const FACT_ROUTER_MODELS = "llm_mesh.router_models";

// ---- the metrics filter's part of the request record ----

@lazy export const RECORD_OUTCOME = "llm_mesh.outcome";
@lazy export const RECORD_RESPONSE_MODEL = "llm_mesh.response_model";
@lazy export const RECORD_USAGE_PROMPT = "llm_mesh.usage_prompt_tokens";
@lazy export const RECORD_USAGE_COMPLETION = "llm_mesh.usage_completion_tokens";
@lazy export const RECORD_USAGE_SOURCE = "llm_mesh.usage_source";
@lazy export const RECORD_TTFT = "llm_mesh.ttft_ms";
@lazy export const RECORD_TENANT = "llm_mesh.tenant";
/** Why the model stopped, as the answer says: each choice's reason, comma-separated. */
@lazy export const RECORD_FINISH_REASONS = "llm_mesh.finish_reasons";
