// The throttle filter's configuration: rules parsed and checked once per configure into immutable
// objects that every request on the worker reads.
import { HeaderMatch, HeaderTest } from "../llm/header-match";
import { ConfigErrors, ConfigObject, ConfigResult, parseConfig } from "../json/config-reader";
import { ApiShape, apiShapeFromName, API_SHAPE_NAMES } from "../llm/request";
import { ModelPattern } from "../llm/model-table";
import { tokenizerFamilyFromName, TokenizerFamily } from "../llm/tokens";
import { DEFAULT_HOLD_HEADERS_TIMEOUT_MS, readHoldHeadersTimeoutMs } from "../host/hold-rules";

export const DEFAULT_OUTPUT_TOKENS: i64 = 1024;
export const DEFAULT_MAX_WAIT_MS: i64 = 10_000;
export const DEFAULT_QUEUE_LENGTH: i64 = 100;
export const DEFAULT_KEY_SLOTS: i64 = 1024;
export const DEFAULT_TICK_MS: i64 = 50;
export const DEFAULT_MAX_BODY_BYTES: i64 = 1048576;
const MAX_LIMIT: i64 = 1_000_000_000_000;
const MAX_KEY_SLOTS: i64 = 65536;
const MAX_WAIT_LIMIT_MS: i64 = 300_000;
/** The rate limit service counts in 32 bits (requests_per_unit is a uint32). */
export const MAX_GLOBAL_LIMIT: i64 = 4_294_967_295;
export const DEFAULT_RLS_TIMEOUT_MS: i64 = 100;
export const DEFAULT_FAILURE_THRESHOLD: i64 = 3;
export const DEFAULT_FAILURE_BACKOFF_MS: i64 = 5000;
export const DEFAULT_LOCAL_SHARE: f64 = 0.5;

const ALL_APIS: string[] = ["openai.chat", "openai.completions", "openai.embeddings", "anthropic.messages"];
const TOP_KEYS: string[] = ["rules", "tokenizer", "max_body_bytes", "tick_ms", "response_headers", "hold_headers_timeout_ms", "rate_limit_service", "filter_state"];
const RULE_KEYS: string[] = [
  "name", "match", "key", "limits", "action", "queue", "redirect", "default_output_tokens", "count_shadow", "key_slots", "backend", "on_service_failure", "local_share",
];
const SERVICE_KEYS: string[] = ["cluster", "authority", "domain", "timeout_ms", "failure_threshold", "failure_backoff_ms"];
const MATCH_KEYS: string[] = ["models", "apis", "paths", "headers"];
const HEADER_KEYS: string[] = ["name", "exact", "prefix", "present"];
const LIMIT_KEYS: string[] = ["requests_per_second", "tokens_per_minute", "input_tokens_per_minute", "output_tokens_per_minute", "max_in_flight"];
const QUEUE_KEYS: string[] = ["max_wait_ms", "max_length"];
const REDIRECT_KEYS: string[] = ["header", "value"];
const ACTIONS: string[] = ["reject", "queue", "redirect"];
const BACKENDS: string[] = ["local", "global"];
const FAILURE_MODES: string[] = ["local", "allow", "deny"];
const GLOBAL_LIMIT_KEYS: string[] = ["requests_per_second", "tokens_per_minute", "input_tokens_per_minute", "output_tokens_per_minute"];
const KEY_SOURCE_HELP = "header:<name>, peer, model or global";

export enum Action {
  Reject = 0,
  Queue,
  Redirect,
}

export enum KeyKind {
  Header = 0,
  /** The mTLS peer's URI SAN (its SPIFFE id in Istio). */
  Peer,
  Model,
  /** One budget for every request the rule matches. */
  Global,
}

/** Where a rule's budget is counted. */
export enum Backend {
  /** This Envoy's shared data: every worker of one proxy spends one budget. */
  Local = 0,
  /** The rate limit service: one budget for every proxy that asks it. */
  Global,
}

/** What a global rule does while the rate limit service cannot answer. */
export enum FailureMode {
  /** Counts in this Envoy's shared data instead, at local_share of each limit. */
  Local = 0,
  /** Admits, counting nothing. */
  Allow,
  /** Answers 503. */
  Deny,
}

export class KeySource {
  constructor(public kind: KeyKind, public header: string = "") {}
}

/** 0 in any field: that limit is not set. */
export class Limits {
  requestsPerSecond: i64 = 0;
  tokensPerMinute: i64 = 0;
  inputTokensPerMinute: i64 = 0;
  outputTokensPerMinute: i64 = 0;
  maxInFlight: i64 = 0;

  get countsTokens(): bool {
    return this.tokensPerMinute > 0 || this.inputTokensPerMinute > 0 || this.outputTokensPerMinute > 0;
  }

  /** Each limit but max_in_flight at `share` of itself, never below 1 (0 would unset it). */
  scaled(share: f64): Limits {
    const out = new Limits();
    out.requestsPerSecond = scaleLimit(this.requestsPerSecond, share);
    out.tokensPerMinute = scaleLimit(this.tokensPerMinute, share);
    out.inputTokensPerMinute = scaleLimit(this.inputTokensPerMinute, share);
    out.outputTokensPerMinute = scaleLimit(this.outputTokensPerMinute, share);
    out.maxInFlight = this.maxInFlight;
    return out;
  }

  /** Only max_in_flight, which no service counts. */
  inFlightOnly(): Limits {
    const out = new Limits();
    out.maxInFlight = this.maxInFlight;
    return out;
  }
}

function scaleLimit(limit: i64, share: f64): i64 {
  if (limit <= 0) return 0;
  const scaled = <i64>Math.floor(<f64>limit * share);
  return scaled > 0 ? scaled : 1;
}

/** The rate limit service global rules ask (envoy.service.ratelimit.v3, over an Envoy cluster). */
export class RateLimitService {
  cluster: string = "";
  authority: string = "";
  domain: string = "";
  timeoutMs: i64 = DEFAULT_RLS_TIMEOUT_MS;
  failureThreshold: i64 = DEFAULT_FAILURE_THRESHOLD;
  failureBackoffMs: i64 = DEFAULT_FAILURE_BACKOFF_MS;
}

export class Rule {
  name: string = "";
  index: i32 = 0;
  /** Empty: any model. */
  models: ModelPattern[] = [];
  /** Indexed by ApiShape; all true when the rule names no APIs. */
  apis: StaticArray<bool> = new StaticArray<bool>(API_SHAPE_NAMES.length);
  /** Empty: any path. Patterns as for models: exact, or a prefix ending in "*". */
  paths: ModelPattern[] = [];
  headers: HeaderMatch[] = [];
  key: KeySource[] = [];
  limits: Limits = new Limits();
  action: Action = Action.Reject;
  maxWaitMs: i64 = DEFAULT_MAX_WAIT_MS;
  maxQueueLength: i64 = DEFAULT_QUEUE_LENGTH;
  redirectHeader: string = "";
  redirectValue: string = "";
  defaultOutputTokens: i64 = DEFAULT_OUTPUT_TOKENS;
  countShadow: bool = false;
  keySlots: i32 = <i32>DEFAULT_KEY_SLOTS;
  backend: Backend = Backend.Local;
  onServiceFailure: FailureMode = FailureMode.Local;
  localShare: f64 = DEFAULT_LOCAL_SHARE;
  /**
   * What this Envoy's shared-data record of a key counts with. A local rule's own limits; for a
   * global rule, local_share of them (max_in_flight in full): the record follows this proxy's own
   * traffic all along, so that falling back to it (on_service_failure "local") starts from what
   * the proxy spent in the last minute rather than from an empty budget.
   */
  localLimits: Limits = new Limits();
  /**
   * What the shared-data record refuses on while the service answers: all of localLimits for a
   * local rule, only max_in_flight for a global one (the service counts the rest).
   */
  enforced: Limits = new Limits();

  get isGlobal(): bool {
    return this.backend == Backend.Global;
  }

  /** The match by what the body and path say; header conditions are checked by the caller. */
  matchesRequest(model: string, shape: ApiShape, path: string): bool {
    if (!unchecked(this.apis[<i32>shape])) return false;
    if (this.models.length > 0 && !anyMatches(this.models, model)) return false;
    if (this.paths.length > 0) {
      const query = path.indexOf("?");
      if (!anyMatches(this.paths, query >= 0 ? path.slice(0, query) : path)) return false;
    }
    return true;
  }
}

function anyMatches(patterns: ModelPattern[], text: string): bool {
  for (let i = 0; i < patterns.length; i++) if (unchecked(patterns[i]).matches(text)) return true;
  return false;
}

export class ThrottleConfig {
  rules: Rule[] = [];
  tokenizer: TokenizerFamily = TokenizerFamily.O200K;
  maxBodyBytes: i64 = DEFAULT_MAX_BODY_BYTES;
  tickMs: i64 = DEFAULT_TICK_MS;
  responseHeaders: bool = true;
  /**
   * Leave the verdict (llm_mesh.throttle, llm_mesh.throttle_wait_ms) in Envoy's filter state for
   * access logs, trace tags and a separate llm-metrics; false keeps it for the one module's stages.
   * A redirect's llm_mesh.route is left either way: a separate llm-router acts on it.
   */
  filterState: bool = true;
  /**
   * How long a request whose headers this filter holds to read the body (no admission facts) waits
   * for it; without allow_on_headers_stop_iteration it never comes, and the request is decided at
   * body time instead (host/hold-rules.ts).
   */
  holdHeadersTimeoutMs: i64 = DEFAULT_HOLD_HEADERS_TIMEOUT_MS;
  /** Some rule queues requests, so the workers need a tick to release them. */
  queues: bool = false;
  /**
   * Every request header a decision reads (rule matches, key parts, and :authority for shadow
   * copies): kept when the headers go upstream before the body is read, since Envoy gives a filter
   * no request headers after it let them go on.
   */
  headerNames: string[] = [":authority"];
  /** Request headers only this filter may set (redirect targets); a client sending one is forging it. */
  redirectHeaders: string[] = [];
  /** The service global rules ask; null when none is configured. */
  rateLimitService: RateLimitService | null = null;
  /** Some rule has backend "global". */
  asksService: bool = false;
}

function isNameChar(c: i32): bool {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c == 0x5f || c == 0x2d;
}

/** Rule names go into shared-data keys and metric names, so they keep to a safe alphabet. */
function isRuleName(name: string): bool {
  return name.length > 0 && name.length <= 64 && allChars(name, isNameChar);
}

function isHeaderName(name: string): bool {
  if (name.length == 0) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c == 0x3a || (c >= 0x41 && c <= 0x5a)) return false;
  }
  return true;
}

function readPatterns(obj: ConfigObject, key: string, what: string, errors: ConfigErrors): ModelPattern[] {
  const names = obj.strings(key, []);
  const out: ModelPattern[] = [];
  for (let i = 0; i < names.length; i++) {
    const pattern = ModelPattern.parse(unchecked(names[i]));
    if (pattern == null) errors.add(obj.fieldPath(key) + "[" + i.toString() + "]", "a " + what + " may end in * (a prefix match) but contain no other *");
    else out.push(pattern);
  }
  return out;
}

function readMatch(rule: Rule, match: ConfigObject | null, errors: ConfigErrors): void {
  if (match == null) {
    for (let i = 0; i < rule.apis.length; i++) unchecked((rule.apis[i] = true));
    return;
  }
  match.onlyKeys(MATCH_KEYS);
  rule.models = readPatterns(match, "models", "model", errors);
  rule.paths = readPatterns(match, "paths", "path", errors);
  const apis = match.strings("apis", ALL_APIS);
  for (let i = 0; i < apis.length; i++) {
    const shape = apiShapeFromName(unchecked(apis[i]));
    if (shape == ApiShape.Unknown) errors.add(match.fieldPath("apis") + "[" + i.toString() + "]", "unknown API \"" + unchecked(apis[i]) + "\" (known: " + ALL_APIS.join(", ") + ")");
    else unchecked((rule.apis[<i32>shape] = true));
  }
  const headers = match.objects("headers");
  for (let i = 0; i < headers.length; i++) {
    const h = unchecked(headers[i]);
    h.onlyKeys(HEADER_KEYS);
    const name = h.name("name", "");
    if (!h.has("name")) errors.add(h.fieldPath("name"), "required");
    else if (!isHeaderName(name)) errors.add(h.fieldPath("name"), "must be a lower-case HTTP header name");
    const tests = (h.has("exact") ? 1 : 0) + (h.has("prefix") ? 1 : 0) + (h.has("present") ? 1 : 0);
    if (tests != 1) {
      errors.add(h.path, "needs exactly one of exact, prefix or present");
      continue;
    }
    if (h.has("exact")) rule.headers.push(new HeaderMatch(name, HeaderTest.Exact, h.string("exact", "")));
    else if (h.has("prefix")) rule.headers.push(new HeaderMatch(name, HeaderTest.Prefix, h.string("prefix", "")));
    else rule.headers.push(new HeaderMatch(name, h.bool("present", true) ? HeaderTest.Present : HeaderTest.Absent, ""));
  }
}

function readKey(rule: Rule, ruleConfig: ConfigObject, errors: ConfigErrors): void {
  if (!ruleConfig.has("key")) {
    errors.add(ruleConfig.fieldPath("key"), "required: whom the limits are per (" + KEY_SOURCE_HELP + ")");
    return;
  }
  const sources = ruleConfig.strings("key", []);
  if (sources.length == 0 && errors.ok) errors.add(ruleConfig.fieldPath("key"), "must name at least one key source (" + KEY_SOURCE_HELP + ")");
  for (let i = 0; i < sources.length; i++) {
    const source = unchecked(sources[i]);
    const path = ruleConfig.fieldPath("key") + "[" + i.toString() + "]";
    if (source.startsWith("header:")) {
      const header = source.slice(7);
      if (!isHeaderName(header)) errors.add(path, "\"" + source + "\": the header name after header: must be a lower-case HTTP header name");
      rule.key.push(new KeySource(KeyKind.Header, header));
    } else if (source == "peer") {
      rule.key.push(new KeySource(KeyKind.Peer));
    } else if (source == "model") {
      rule.key.push(new KeySource(KeyKind.Model));
    } else if (source == "global") {
      if (sources.length > 1) errors.add(path, "global is one budget for all matching requests and cannot be combined with other key sources");
      rule.key.push(new KeySource(KeyKind.Global));
    } else {
      errors.add(path, "unknown key source \"" + source + "\" (known: " + KEY_SOURCE_HELP + ")");
    }
  }
}

function readLimits(rule: Rule, limits: ConfigObject | null, ruleConfig: ConfigObject, errors: ConfigErrors): void {
  if (limits == null) {
    errors.add(ruleConfig.fieldPath("limits"), "required: set at least one of " + LIMIT_KEYS.join(", "));
    return;
  }
  limits.onlyKeys(LIMIT_KEYS);
  const l = rule.limits;
  l.requestsPerSecond = limits.int("requests_per_second", 0, 1, MAX_LIMIT);
  l.tokensPerMinute = limits.int("tokens_per_minute", 0, 1, MAX_LIMIT);
  l.inputTokensPerMinute = limits.int("input_tokens_per_minute", 0, 1, MAX_LIMIT);
  l.outputTokensPerMinute = limits.int("output_tokens_per_minute", 0, 1, MAX_LIMIT);
  l.maxInFlight = limits.int("max_in_flight", 0, 1, MAX_LIMIT);
  if (errors.ok && l.requestsPerSecond == 0 && !l.countsTokens && l.maxInFlight == 0) {
    errors.add(limits.path, "set at least one of " + LIMIT_KEYS.join(", "));
  }
}

function readAction(rule: Rule, ruleConfig: ConfigObject, errors: ConfigErrors): void {
  const action = ruleConfig.oneOf("action", ACTIONS, "reject");
  rule.action = action == "queue" ? Action.Queue : action == "redirect" ? Action.Redirect : Action.Reject;

  const queue = ruleConfig.object("queue");
  if (queue != null) {
    if (rule.action != Action.Queue) errors.add(queue.path, "only applies with action \"queue\"");
    queue.onlyKeys(QUEUE_KEYS);
    rule.maxWaitMs = queue.int("max_wait_ms", DEFAULT_MAX_WAIT_MS, 1, MAX_WAIT_LIMIT_MS);
    rule.maxQueueLength = queue.int("max_length", DEFAULT_QUEUE_LENGTH, 1, 1_000_000);
  }

  const redirect = ruleConfig.object("redirect");
  if (rule.action == Action.Redirect && redirect == null) {
    errors.add(ruleConfig.fieldPath("redirect"), "required with action \"redirect\": {\"header\": ..., \"value\": ...}");
  }
  if (redirect == null) return;
  if (rule.action != Action.Redirect) errors.add(redirect.path, "only applies with action \"redirect\"");
  redirect.onlyKeys(REDIRECT_KEYS);
  rule.redirectHeader = redirect.name("header", "");
  rule.redirectValue = redirect.name("value", "");
  if (!redirect.has("header")) errors.add(redirect.fieldPath("header"), "required: the request header the routes match for the fallback");
  else if (!isHeaderName(rule.redirectHeader) || rule.redirectHeader.startsWith(":")) errors.add(redirect.fieldPath("header"), "must be a lower-case HTTP header name");
  if (!redirect.has("value")) errors.add(redirect.fieldPath("value"), "required: the fallback's name, as the routes match it");
}

function readRule(ruleConfig: ConfigObject, index: i32, config: ThrottleConfig, errors: ConfigErrors): Rule {
  ruleConfig.onlyKeys(RULE_KEYS);
  const rule = new Rule();
  rule.index = index;
  rule.name = ruleConfig.string("name", "rule-" + index.toString());
  if (!isRuleName(rule.name)) errors.add(ruleConfig.fieldPath("name"), "must be 1 to 64 letters, digits, _ or -");
  for (let i = 0; i < config.rules.length; i++) {
    if (unchecked(config.rules[i]).name == rule.name) errors.add(ruleConfig.fieldPath("name"), "\"" + rule.name + "\" is already the name of rules[" + i.toString() + "]");
  }
  readMatch(rule, ruleConfig.object("match"), errors);
  readKey(rule, ruleConfig, errors);
  readLimits(rule, ruleConfig.object("limits"), ruleConfig, errors);
  readAction(rule, ruleConfig, errors);
  rule.defaultOutputTokens = ruleConfig.int("default_output_tokens", DEFAULT_OUTPUT_TOKENS, 0, MAX_LIMIT);
  rule.countShadow = ruleConfig.bool("count_shadow", false);
  rule.keySlots = <i32>ruleConfig.int("key_slots", DEFAULT_KEY_SLOTS, 1, MAX_KEY_SLOTS);
  readBackend(rule, ruleConfig, config, errors);
  return rule;
}

function readBackend(rule: Rule, ruleConfig: ConfigObject, config: ThrottleConfig, errors: ConfigErrors): void {
  rule.backend = ruleConfig.oneOf("backend", BACKENDS, "local") == "global" ? Backend.Global : Backend.Local;
  const mode = ruleConfig.oneOf("on_service_failure", FAILURE_MODES, "local");
  rule.onServiceFailure = mode == "allow" ? FailureMode.Allow : mode == "deny" ? FailureMode.Deny : FailureMode.Local;
  rule.localShare = ruleConfig.number("local_share", DEFAULT_LOCAL_SHARE, 0.001, 1);
  if (!rule.isGlobal) {
    if (ruleConfig.has("on_service_failure")) errors.add(ruleConfig.fieldPath("on_service_failure"), "only applies with backend \"global\"");
    if (ruleConfig.has("local_share")) errors.add(ruleConfig.fieldPath("local_share"), "only applies with backend \"global\"");
    rule.localLimits = rule.limits;
    rule.enforced = rule.limits;
    return;
  }
  if (ruleConfig.has("local_share") && rule.onServiceFailure != FailureMode.Local) {
    errors.add(ruleConfig.fieldPath("local_share"), "only applies with on_service_failure \"local\"");
  }
  if (config.rateLimitService == null && errors.ok) {
    errors.add("rate_limit_service", "required: " + ruleConfig.path + " has backend \"global\", counted by the rate limit service this names ({\"cluster\": ..., \"domain\": ...})");
  }
  const limits = ruleConfig.object("limits");
  if (limits != null && errors.ok) {
    const l = rule.limits;
    if (l.requestsPerSecond == 0 && !l.countsTokens) {
      errors.add(limits.path, "with backend \"global\" set at least one of " + GLOBAL_LIMIT_KEYS.join(", ") + ": max_in_flight is counted by each Envoy, which leaves the service nothing to count");
    }
    const values: i64[] = [l.requestsPerSecond, l.tokensPerMinute, l.inputTokensPerMinute, l.outputTokensPerMinute];
    for (let i = 0; i < values.length; i++) {
      if (unchecked(values[i]) > MAX_GLOBAL_LIMIT) {
        errors.add(limits.fieldPath(unchecked(GLOBAL_LIMIT_KEYS[i])), "with backend \"global\" at most " + MAX_GLOBAL_LIMIT.toString() + " (the rate limit service counts in 32 bits), got " + unchecked(values[i]).toString());
      }
    }
  }
  rule.localLimits = rule.onServiceFailure == FailureMode.Local ? rule.limits.scaled(rule.localShare) : rule.limits.inFlightOnly();
  rule.enforced = rule.limits.inFlightOnly();
}

function isDomainChar(c: i32): bool {
  return isNameChar(c) || c == 0x2e;
}

function readRateLimitService(service: ConfigObject, errors: ConfigErrors): RateLimitService {
  service.onlyKeys(SERVICE_KEYS);
  const out = new RateLimitService();
  out.cluster = service.name("cluster", "");
  if (!service.has("cluster")) errors.add(service.fieldPath("cluster"), "required: the Envoy cluster of the rate limit service (gRPC over HTTP/2)");
  out.domain = service.name("domain", "");
  if (!service.has("domain")) {
    errors.add(service.fieldPath("domain"), "required: the domain the rate limit service's config declares");
  } else if (out.domain.length > 64 || !allChars(out.domain, isDomainChar)) {
    errors.add(service.fieldPath("domain"), "must be 1 to 64 letters, digits, _, - or .");
  }
  out.authority = service.has("authority") ? service.name("authority", "") : clusterHost(out.cluster);
  if (!allChars(out.authority, isVisible)) errors.add(service.fieldPath("authority"), "must be a host name, without spaces or control characters");
  out.timeoutMs = service.int("timeout_ms", DEFAULT_RLS_TIMEOUT_MS, 1, 5000);
  out.failureThreshold = service.int("failure_threshold", DEFAULT_FAILURE_THRESHOLD, 1, 1000);
  out.failureBackoffMs = service.int("failure_backoff_ms", DEFAULT_FAILURE_BACKOFF_MS, 100, 600_000);
  return out;
}

/** Istio names a service's cluster outbound|<port>|<subset>|<host>: the host is the authority it answers to. */
function clusterHost(cluster: string): string {
  const bar = cluster.lastIndexOf("|");
  return bar >= 0 && bar + 1 < cluster.length ? cluster.slice(bar + 1) : cluster;
}

function isVisible(c: i32): bool {
  return c > 0x20 && c < 0x7f;
}

function allChars(text: string, ok: (c: i32) => bool): bool {
  for (let i = 0; i < text.length; i++) if (!ok(text.charCodeAt(i))) return false;
  return true;
}

export function parseThrottleConfig(text: string): ConfigResult<ThrottleConfig> {
  return parseConfig<ThrottleConfig>(text, readThrottleConfig);
}

/** The configuration from its parsed JSON object (alone, or a section of llm-mesh's one-module configuration). */
export function readThrottleConfig(root: ConfigObject, errors: ConfigErrors): ConfigResult<ThrottleConfig> {
  root.onlyKeys(TOP_KEYS);
  const config = new ThrottleConfig();
  const service = root.object("rate_limit_service");
  if (service != null) config.rateLimitService = readRateLimitService(service, errors);
  const rules = root.objects("rules");
  for (let i = 0; i < rules.length; i++) {
    const rule = readRule(unchecked(rules[i]), i, config, errors);
    config.rules.push(rule);
    if (rule.action == Action.Queue) config.queues = true;
    if (rule.isGlobal) config.asksService = true;
    for (let j = 0; j < rule.headers.length; j++) addName(config.headerNames, unchecked(rule.headers[j]).name);
    for (let j = 0; j < rule.key.length; j++) {
      const source = unchecked(rule.key[j]);
      if (source.kind == KeyKind.Header) addName(config.headerNames, source.header);
    }
    if (rule.action == Action.Redirect && !config.redirectHeaders.includes(rule.redirectHeader)) config.redirectHeaders.push(rule.redirectHeader);
  }
  const tokenizer = root.oneOf("tokenizer", ["o200k", "cl100k"], "o200k");
  config.tokenizer = <TokenizerFamily>tokenizerFamilyFromName(tokenizer);
  config.maxBodyBytes = root.int("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 1, 64 * 1048576);
  config.tickMs = root.int("tick_ms", DEFAULT_TICK_MS, 10, 1000);
  config.responseHeaders = root.bool("response_headers", true);
  config.filterState = root.bool("filter_state", true);
  config.holdHeadersTimeoutMs = readHoldHeadersTimeoutMs(root);

  return new ConfigResult<ThrottleConfig>(config, errors);
}

function addName(names: string[], name: string): void {
  if (!names.includes(name)) names.push(name);
}
