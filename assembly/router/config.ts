// The router's configuration: parsed and checked once per configure into immutable objects that
// every request on the worker shares. Rules point at their targets directly, so a request never
// looks a name up.
import { HeaderMatch, HeaderTest } from "../llm/header-match";
import { ConfigErrors, ConfigObject, ConfigResult, parseConfig } from "../json/config-reader";
import { JsonKind } from "../json/reader";
import { ModelPattern } from "../llm/model-table";
import { asciiLower } from "../text/ascii";
import { DEFAULT_HOLD_HEADERS_TIMEOUT_MS, readHoldHeadersTimeoutMs } from "../host/hold-rules";

export const DEFAULT_ROUTE_HEADER = "x-llm-route";
export const DEFAULT_PRIMARY = "primary";
export const DEFAULT_CANARY = "canary";
export const DEFAULT_MAX_BODY_BYTES: i64 = 1048576;
const MAX_BODY_BYTES_LIMIT: i64 = 64 * 1048576;
export const DEFAULT_PREVIEW_CHARS: i64 = 64;
const MAX_PREVIEW_CHARS: i64 = 4096;
const MAX_NAME_LENGTH: i32 = 64;
const MAX_MODEL_LENGTH: i32 = 256;

/** Weights are kept in hundredths of a percent: 100% is 10000. */
export const WEIGHT_SCALE: i32 = 10000;

export const DEFAULT_WINDOW_MS: i64 = 30000;
export const DEFAULT_MIN_REQUESTS: i64 = 10;
export const DEFAULT_MAX_ERROR_RATE: f64 = 0.2;
export const DEFAULT_COOLDOWN_MS: i64 = 60000;

const TOP_KEYS: string[] = ["route_header", "model_header", "primary", "default_target", "targets", "rules", "sticky_header", "max_body_bytes", "shadow", "record", "hold_headers_timeout_ms", "filter_state"];
const TARGET_KEYS: string[] = ["rewrite_model", "guard"];
const GUARD_KEYS: string[] = ["window_ms", "min_requests", "max_error_rate", "max_mean_latency_ms", "cooldown_ms"];
const RULE_KEYS: string[] = ["name", "match", "target", "weights", "sticky_header", "trust_client_route"];
const MATCH_KEYS: string[] = ["headers", "models"];
const HEADER_KEYS: string[] = ["name", "exact", "prefix", "present"];
const SHADOW_KEYS: string[] = ["rewrite_model"];
const RECORD_KEYS: string[] = ["enabled", "log", "preview_chars"];
/** Headers whose value Envoy or the HTTP framing owns; routing on them or setting them breaks requests. */
const RESERVED_HEADERS: string[] = ["host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "x-request-id"];

/** When a guarded target's recent requests fail or slow down too much, its traffic goes to the primary. */
export class GuardConfig {
  windowMs: i64 = DEFAULT_WINDOW_MS;
  /** Fewer requests than this in the window never trip the guard: a single failure is no trend. */
  minRequests: i64 = DEFAULT_MIN_REQUESTS;
  /** Trips when failures / requests is above this; 1 never trips on errors. */
  maxErrorRate: f64 = DEFAULT_MAX_ERROR_RATE;
  /** Trips when the mean time to the response headers is above this; 0: no latency check. */
  maxMeanLatencyMs: i64 = 0;
  cooldownMs: i64 = DEFAULT_COOLDOWN_MS;
}

export class Target {
  /** Also the routing header's value and the `llm_mesh.route` the metrics filter reports. */
  name: string = "";
  index: i32 = 0;
  /** The model name the body's `model` is rewritten to for this target; "" leaves it. */
  rewriteModel: string = "";
  guard: GuardConfig | null = null;
}

/** A split of traffic: target i takes the buckets from bounds[i-1] (or 0) up to bounds[i]. */
export class Weights {
  targets: Target[] = [];
  bounds: i32[] = [];

  pick(bucket: i32): Target {
    for (let i = 0; i < this.bounds.length; i++) {
      if (bucket < unchecked(this.bounds[i])) return unchecked(this.targets[i]);
    }
    return unchecked(this.targets[this.targets.length - 1]);
  }

  /** The weight of a target in hundredths of a percent. */
  weightOf(target: Target): i32 {
    let previous = 0;
    let total = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      if (unchecked(this.targets[i]) == target) total += unchecked(this.bounds[i]) - previous;
      previous = unchecked(this.bounds[i]);
    }
    return total;
  }
}

export class Rule {
  name: string = "";
  headers: HeaderMatch[] = [];
  /** Empty: the rule does not look at the model. */
  models: ModelPattern[] = [];
  target: Target | null = null;
  weights: Weights | null = null;
  /** Hashed to keep a user on one side of a weighted split; "" picks at random. */
  stickyHeader: string = "";
  /** A routing header sent by the client, naming a known target, decides when this rule matches. */
  trustClientRoute: bool = false;
}

export class RecordConfig {
  enabled: bool = false;
  /** Also write each record as an info log line. */
  log: bool = false;
  previewChars: i32 = <i32>DEFAULT_PREVIEW_CHARS;
}

export class RouterConfig {
  routeHeader: string = DEFAULT_ROUTE_HEADER;
  /** Where the model, as it goes upstream, is copied for plain route matching; "" copies nowhere. */
  modelHeader: string = "";
  targets: Target[] = [];
  primary: Target = new Target();
  defaultTarget: Target = new Target();
  rules: Rule[] = [];
  maxBodyBytes: i64 = DEFAULT_MAX_BODY_BYTES;
  /** The model a mirrored request is rewritten to on the shadow side; "" leaves it. */
  shadowRewriteModel: string = "";
  record: RecordConfig = new RecordConfig();
  /**
   * Leave the decision (llm_mesh.route, llm_mesh.router) in Envoy's filter state for access logs,
   * trace tags and a separate llm-metrics; false keeps it for the one module's stages.
   */
  filterState: bool = true;
  /** Whether a decision may depend on the request's model, so the body must be read first. */
  needsModel: bool = false;
  /**
   * How long a request whose headers wait for the body (its model, or a model rewrite) waits for it;
   * without allow_on_headers_stop_iteration it never comes, and the request goes on without the
   * model (host/hold-rules.ts).
   */
  holdHeadersTimeoutMs: i64 = DEFAULT_HOLD_HEADERS_TIMEOUT_MS;

  /** Whether a request's headers may wait for its body: for its model, or for a model rewrite. */
  get mayHoldHeaders(): bool {
    if (this.needsModel || this.shadowRewriteModel.length > 0) return true;
    for (let i = 0; i < this.targets.length; i++) if (unchecked(this.targets[i]).rewriteModel.length > 0) return true;
    return false;
  }

  targetNamed(name: string): Target | null {
    for (let i = 0; i < this.targets.length; i++) {
      if (unchecked(this.targets[i]).name == name) return unchecked(this.targets[i]);
    }
    return null;
  }

  targetNames(): string {
    const names: string[] = [];
    for (let i = 0; i < this.targets.length; i++) names.push(unchecked(this.targets[i]).name);
    return names.join(", ");
  }

  /** The names models are rewritten to (targets' and the shadow's rewrite_model): they exist only behind the router. */
  rewriteModels(): string[] {
    const names: string[] = [];
    for (let i = 0; i < this.targets.length; i++) {
      const name = unchecked(this.targets[i]).rewriteModel;
      if (name.length > 0 && !names.includes(name)) names.push(name);
    }
    if (this.shadowRewriteModel.length > 0 && !names.includes(this.shadowRewriteModel)) names.push(this.shadowRewriteModel);
    return names;
  }
}

/** Target names go into a header value and a metric label: a small, safe alphabet. */
function isTargetName(name: string): bool {
  if (name.length == 0 || name.length > MAX_NAME_LENGTH) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x5f || c == 0x2e;
    if (!ok) return false;
  }
  return true;
}

/** An HTTP field-name token (RFC 9110), lower-cased as HTTP/2 requires; "" when it is not one. */
function headerName(obj: ConfigObject, key: string, fallback: string, mayBeEmpty: bool): string {
  const text = obj.string(key, fallback);
  if (text.length == 0) {
    if (!mayBeEmpty) obj.errors.add(obj.fieldPath(key), "must not be empty");
    return text;
  }
  const lower = asciiLower(text);
  for (let i = 0; i < lower.length; i++) {
    const c = lower.charCodeAt(i);
    const token = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || "!#$%&'*+-.^_`|~".indexOf(String.fromCharCode(c)) >= 0;
    if (!token) {
      obj.errors.add(obj.fieldPath(key), "\"" + text + "\" is not a header name (letters, digits and !#$%&'*+-.^_`|~ only; no pseudo-headers)");
      return "";
    }
  }
  if (RESERVED_HEADERS.includes(lower)) obj.errors.add(obj.fieldPath(key), "\"" + lower + "\" is managed by Envoy and cannot be used here");
  return lower;
}

/** A model name written into a JSON body: non-empty, no control characters, bounded. */
function modelName(obj: ConfigObject, key: string): string {
  const text = obj.string(key, "");
  if (!obj.has(key)) return "";
  if (text.length == 0 || text.length > MAX_MODEL_LENGTH) {
    obj.errors.add(obj.fieldPath(key), "must be a model name of 1 to " + MAX_MODEL_LENGTH.toString() + " characters");
    return "";
  }
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) < 0x20) {
      obj.errors.add(obj.fieldPath(key), "must not contain control characters");
      return "";
    }
  }
  return text;
}

function readGuard(obj: ConfigObject): GuardConfig {
  obj.onlyKeys(GUARD_KEYS);
  const guard = new GuardConfig();
  guard.windowMs = obj.int("window_ms", DEFAULT_WINDOW_MS, 100, 3600000);
  guard.minRequests = obj.int("min_requests", DEFAULT_MIN_REQUESTS, 1, 1000000);
  guard.maxErrorRate = obj.number("max_error_rate", DEFAULT_MAX_ERROR_RATE, 0, 1);
  guard.maxMeanLatencyMs = obj.int("max_mean_latency_ms", 0, 0, 3600000);
  guard.cooldownMs = obj.int("cooldown_ms", DEFAULT_COOLDOWN_MS, 100, 86400000);
  return guard;
}

function readTargets(root: ConfigObject, config: RouterConfig, errors: ConfigErrors): void {
  const entries = root.entries("targets");
  if (!root.has("targets")) {
    // Without a targets table the usual pair exists, so a first canary needs only a rule.
    const names = [DEFAULT_PRIMARY, DEFAULT_CANARY];
    for (let i = 0; i < names.length; i++) {
      const target = new Target();
      target.name = unchecked(names[i]);
      target.index = i;
      config.targets.push(target);
    }
    return;
  }
  if (entries.length == 0 && errors.ok) errors.add("targets", "must name at least the primary target");
  for (let i = 0; i < entries.length; i++) {
    const entry = unchecked(entries[i]);
    entry.config.onlyKeys(TARGET_KEYS);
    if (!isTargetName(entry.name)) {
      errors.add(entry.config.path, "a target name must be 1 to " + MAX_NAME_LENGTH.toString() + " characters of a-z, 0-9, '-', '_' or '.'");
    }
    const target = new Target();
    target.name = entry.name;
    target.index = config.targets.length;
    target.rewriteModel = modelName(entry.config, "rewrite_model");
    const guard = entry.config.object("guard");
    if (guard != null) target.guard = readGuard(guard);
    config.targets.push(target);
  }
}

/** A known target by name, or null with the error recorded at `path`. */
function targetRef(config: RouterConfig, obj: ConfigObject, key: string): Target | null {
  const name = obj.name(key, "");
  if (name.length == 0) return null;
  const target = config.targetNamed(name);
  if (target == null) obj.errors.add(obj.fieldPath(key), "unknown target \"" + name + "\" (targets: " + config.targetNames() + ")");
  return target;
}

/** Hundredths of a percent as written in a config: 9500 is "95", 1250 is "12.5", 5 is "0.05". */
export function percentText(hundredths: i32): string {
  const whole = (hundredths / 100).toString();
  const fraction = hundredths % 100;
  if (fraction == 0) return whole;
  return whole + "." + (fraction % 10 == 0 ? (fraction / 10).toString() : (fraction < 10 ? "0" : "") + fraction.toString());
}

function readWeights(config: RouterConfig, obj: ConfigObject): Weights | null {
  const weights = new Weights();
  let total = 0;
  for (let i = 0; i < obj.value.keys.length; i++) {
    const name = unchecked(obj.value.keys[i]);
    const value = unchecked(obj.value.values[i]);
    const path = obj.fieldPath(name);
    const target = config.targetNamed(name);
    if (target == null) {
      obj.errors.add(path, "unknown target \"" + name + "\" (targets: " + config.targetNames() + ")");
      return null;
    }
    const scaled = value.number * 100;
    const hundredths = Math.round(scaled);
    if (value.kind != JsonKind.Number || value.number < 0 || value.number > 100 || Math.abs(scaled - hundredths) > 1e-6) {
      obj.errors.add(path, "must be a percentage from 0 to 100 with at most two decimals");
      return null;
    }
    total += <i32>hundredths;
    weights.targets.push(target);
    weights.bounds.push(total);
  }
  if (weights.targets.length == 0) {
    obj.errors.add(obj.path, "must give at least one target a weight");
    return null;
  }
  if (total != WEIGHT_SCALE) {
    obj.errors.add(obj.path, "must add up to 100, got " + percentText(total));
    return null;
  }
  return weights;
}

function readHeaderMatch(obj: ConfigObject): HeaderMatch | null {
  obj.onlyKeys(HEADER_KEYS);
  const name = headerName(obj, "name", "", false);
  let tests = 0;
  let condition: HeaderMatch | null = null;
  if (obj.has("exact")) {
    tests++;
    condition = new HeaderMatch(name, HeaderTest.Exact, obj.string("exact", ""));
  }
  if (obj.has("prefix")) {
    tests++;
    condition = new HeaderMatch(name, HeaderTest.Prefix, obj.name("prefix", ""));
  }
  if (obj.has("present")) {
    tests++;
    condition = new HeaderMatch(name, obj.bool("present", true) ? HeaderTest.Present : HeaderTest.Absent, "");
  }
  if (tests != 1) {
    obj.errors.add(obj.path, "needs exactly one of exact, prefix or present");
    return null;
  }
  return condition;
}

function readRule(config: RouterConfig, obj: ConfigObject, index: i32, defaultSticky: string): Rule {
  obj.onlyKeys(RULE_KEYS);
  const rule = new Rule();
  rule.name = obj.name("name", "rule-" + index.toString());
  const match = obj.object("match");
  if (match != null) {
    match.onlyKeys(MATCH_KEYS);
    const headers = match.objects("headers");
    for (let i = 0; i < headers.length; i++) {
      const condition = readHeaderMatch(unchecked(headers[i]));
      if (condition == null) continue;
      if (condition.name == config.routeHeader) {
        match.errors.add(unchecked(headers[i]).fieldPath("name"), "the routing header is removed before rules run; to let clients pick their side use trust_client_route");
      }
      rule.headers.push(condition);
    }
    const models = match.strings("models", []);
    for (let i = 0; i < models.length; i++) {
      const pattern = ModelPattern.parse(unchecked(models[i]));
      if (pattern == null) match.errors.add(match.fieldPath("models") + "[" + i.toString() + "]", "a model name may end in * (a prefix match) but contain no other *");
      else rule.models.push(pattern);
    }
  }
  rule.trustClientRoute = obj.bool("trust_client_route", false);
  if (obj.has("target") && obj.has("weights")) obj.errors.add(obj.path, "has both target and weights; a rule picks one way");
  if (obj.has("target")) rule.target = targetRef(config, obj, "target");
  const weights = obj.object("weights");
  if (weights != null) rule.weights = readWeights(config, weights);
  if (!obj.has("target") && !obj.has("weights") && !rule.trustClientRoute) {
    obj.errors.add(obj.path, "needs a target or weights (or trust_client_route)");
  }
  rule.stickyHeader = obj.has("sticky_header") ? headerName(obj, "sticky_header", "", true) : defaultSticky;
  return rule;
}

export function parseRouterConfig(text: string): ConfigResult<RouterConfig> {
  return parseConfig<RouterConfig>(text, readRouterConfig);
}

/** The configuration from its parsed JSON object (alone, or a section of llm-mesh's one-module configuration). */
export function readRouterConfig(root: ConfigObject, errors: ConfigErrors): ConfigResult<RouterConfig> {
  root.onlyKeys(TOP_KEYS);
  const config = new RouterConfig();

  config.routeHeader = headerName(root, "route_header", DEFAULT_ROUTE_HEADER, false);
  config.modelHeader = headerName(root, "model_header", "", true);
  if (config.modelHeader.length > 0 && config.modelHeader == config.routeHeader) {
    errors.add("model_header", "must differ from route_header");
  }
  config.maxBodyBytes = root.int("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 1, MAX_BODY_BYTES_LIMIT);
  config.holdHeadersTimeoutMs = readHoldHeadersTimeoutMs(root);

  readTargets(root, config, errors);
  const primaryName = root.name("primary", DEFAULT_PRIMARY);
  const primary = config.targetNamed(primaryName);
  if (primary == null) {
    errors.add(root.has("primary") ? "primary" : "targets", "no target named \"" + primaryName + "\" (targets: " + config.targetNames() + "); the primary target must exist");
  } else {
    config.primary = primary;
    if (primary.guard != null) {
      errors.add("targets." + primary.name + ".guard", "the primary target cannot be guarded: it is where traffic goes when a guard trips");
    }
  }
  config.defaultTarget = config.primary;
  if (root.has("default_target")) {
    const target = targetRef(config, root, "default_target");
    if (target != null) config.defaultTarget = target;
  }

  const defaultSticky = headerName(root, "sticky_header", "", true);
  const rules = root.objects("rules");
  for (let i = 0; i < rules.length; i++) {
    const rule = readRule(config, unchecked(rules[i]), i, defaultSticky);
    if (rule.models.length > 0) config.needsModel = true;
    config.rules.push(rule);
  }
  if (config.modelHeader.length > 0) config.needsModel = true;

  const shadow = root.object("shadow");
  if (shadow != null) {
    shadow.onlyKeys(SHADOW_KEYS);
    config.shadowRewriteModel = modelName(shadow, "rewrite_model");
  }
  config.filterState = root.bool("filter_state", true);
  const record = root.object("record");
  if (record != null) {
    record.onlyKeys(RECORD_KEYS);
    config.record.enabled = record.bool("enabled", true);
    config.record.log = record.bool("log", false);
    config.record.previewChars = <i32>record.int("preview_chars", DEFAULT_PREVIEW_CHARS, 0, MAX_PREVIEW_CHARS);
  }

  return new ConfigResult<RouterConfig>(config, errors);
}
