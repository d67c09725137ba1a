// The admission filter's configuration: parsed and checked once per configure, then shared
// read-only by every request on the worker.
import { ConfigErrors, ConfigObject, ConfigResult, parseConfig } from "../json/config-reader";
import { ApiShape, apiShapeForPath, apiShapeFromName, API_SHAPE_NAMES, routedPath } from "../llm/request";
import { ModelPattern, ModelTable } from "../llm/model-table";
import { tokenizerFamilyFromName, TokenizerFamily, tokenizerFamilyName } from "../llm/tokens";
import { DEFAULT_HOLD_HEADERS_TIMEOUT_MS, readHoldHeadersTimeoutMs } from "../host/hold-rules";

export const DEFAULT_MAX_BODY_BYTES: i64 = 1048576;
export const DEFAULT_MAX_PROMPT_TOKENS: i64 = 128000;
const MAX_BODY_BYTES_LIMIT: i64 = 64 * 1048576;
const TOKEN_LIMIT: i64 = 100_000_000;

const ALL_APIS: string[] = ["openai.chat", "openai.completions", "openai.embeddings", "anthropic.messages"];
const MODEL_KEYS: string[] = ["max_body_bytes", "max_prompt_tokens", "max_output_tokens", "output_limit_action", "tokenizer"];
const TOP_KEYS: string[] = ["apis", "paths", "models", "unknown_model", "model_list", "invalid_body", "forward_headers", "hold_headers", "hold_headers_timeout_ms", "filter_state"];

/** What `GET /v1/models` answers (models-list.ts). */
export enum ModelListMode {
  /** The model server's list less the models this filter refuses. */
  Admitted = 0,
  /** The model server's list, untouched. */
  Upstream,
}

export enum OutputLimitAction {
  Reject = 0,
  Clamp,
}

/** The limits for one model, or for every model not listed (the "default" entry). */
export class ModelLimits {
  name: string = "default";
  maxBodyBytes: i64 = DEFAULT_MAX_BODY_BYTES;
  /** 0: no limit. */
  maxPromptTokens: i64 = DEFAULT_MAX_PROMPT_TOKENS;
  /** 0: no limit. */
  maxOutputTokens: i64 = 0;
  outputLimitAction: OutputLimitAction = OutputLimitAction.Reject;
  tokenizer: TokenizerFamily = TokenizerFamily.O200K;
}

export class AdmissionConfig {
  /** Indexed by ApiShape. */
  apis: StaticArray<bool> = new StaticArray<bool>(API_SHAPE_NAMES.length);
  pathNames: string[] = [];
  pathShapes: ApiShape[] = [];
  defaults: ModelLimits = new ModelLimits();
  models: ModelTable<ModelLimits> = new ModelTable<ModelLimits>();
  rejectUnknownModels: bool = true;
  rejectInvalidBodies: bool = true;
  forwardHeaders: bool = true;
  /**
   * Leave the facts and the verdict in Envoy's filter state (llm_mesh.*), for access logs, trace
   * tags and later llm-mesh filters of their own; false keeps them for the one module's stages.
   */
  filterState: bool = true;
  /**
   * Hold the request headers until the body is read, so the verdict can add headers and fix
   * content-length before anything goes upstream. Needs Envoy's `allow_on_headers_stop_iteration`
   * on the Wasm filter: without it Envoy never hands the body over, and the filter lets the
   * request go on without holding once holdHeadersTimeoutMs has passed (hold-rules.ts).
   */
  holdHeaders: bool = false;
  /** How long a held request waits for its first body chunk before it goes on as if not held. */
  holdHeadersTimeoutMs: i64 = DEFAULT_HOLD_HEADERS_TIMEOUT_MS;
  /** Whether some model's output limit is enforced by rewriting the body. */
  mayRewriteBody: bool = false;
  /** The most any request may buffer: the largest byte limit of any entry. */
  maxBufferBytes: i64 = DEFAULT_MAX_BODY_BYTES;
  /** Admitted by default when unknown models are refused and some are listed: the list then says what is served. */
  modelList: ModelListMode = ModelListMode.Upstream;

  /** The API a request path is for, if the filter applies to it. */
  shapeFor(path: string): ApiShape {
    const clean = routedPath(path);
    let shape = ApiShape.Unknown;
    const index = this.pathNames.indexOf(clean);
    if (index >= 0) shape = unchecked(this.pathShapes[index]);
    else shape = apiShapeForPath(clean);
    return unchecked(this.apis[<i32>shape]) ? shape : ApiShape.Unknown;
  }

  /** Limits for a model; null when the model is not allowed. */
  limitsFor(model: string): ModelLimits | null {
    const listed = this.models.find(model);
    if (listed != null) return listed;
    if (this.models.size > 0 && this.rejectUnknownModels) return null;
    return this.defaults;
  }
}

function readLimits(entry: ConfigObject, name: string, base: ModelLimits): ModelLimits {
  entry.onlyKeys(MODEL_KEYS);
  const limits = new ModelLimits();
  limits.name = name;
  limits.maxBodyBytes = entry.int("max_body_bytes", base.maxBodyBytes, 1, MAX_BODY_BYTES_LIMIT);
  limits.maxPromptTokens = entry.int("max_prompt_tokens", base.maxPromptTokens, 0, TOKEN_LIMIT);
  limits.maxOutputTokens = entry.int("max_output_tokens", base.maxOutputTokens, 0, TOKEN_LIMIT);
  const action = entry.oneOf("output_limit_action", ["reject", "clamp"], base.outputLimitAction == OutputLimitAction.Clamp ? "clamp" : "reject");
  limits.outputLimitAction = action == "clamp" ? OutputLimitAction.Clamp : OutputLimitAction.Reject;
  const tokenizer = entry.oneOf("tokenizer", ["o200k", "cl100k"], tokenizerFamilyName(base.tokenizer));
  limits.tokenizer = <TokenizerFamily>tokenizerFamilyFromName(tokenizer);
  return limits;
}

export function parseAdmissionConfig(text: string): ConfigResult<AdmissionConfig> {
  return parseConfig<AdmissionConfig>(text, readAdmissionConfig);
}

/** The configuration from its parsed JSON object (alone, or a section of llm-mesh's one-module configuration). */
export function readAdmissionConfig(root: ConfigObject, errors: ConfigErrors): ConfigResult<AdmissionConfig> {
  root.onlyKeys(TOP_KEYS);
  const config = new AdmissionConfig();

  const apis = root.strings("apis", ALL_APIS);
  for (let i = 0; i < apis.length; i++) {
    const shape = apiShapeFromName(unchecked(apis[i]));
    if (shape == ApiShape.Unknown) errors.add("apis[" + i.toString() + "]", "unknown API \"" + unchecked(apis[i]) + "\" (known: " + ALL_APIS.join(", ") + ")");
    else unchecked((config.apis[<i32>shape] = true));
  }

  const paths = root.object("paths");
  if (paths != null) {
    for (let i = 0; i < paths.value.keys.length; i++) {
      const path = unchecked(paths.value.keys[i]);
      const shapeName = paths.string(path, "");
      const shape = apiShapeFromName(shapeName);
      if (!path.startsWith("/")) errors.add(paths.fieldPath(path), "a path must start with /");
      else if (shape == ApiShape.Unknown) errors.add(paths.fieldPath(path), "unknown API \"" + shapeName + "\" (known: " + ALL_APIS.join(", ") + ")");
      config.pathNames.push(path);
      config.pathShapes.push(shape);
    }
  }

  config.rejectUnknownModels = root.oneOf("unknown_model", ["reject", "allow"], "reject") == "reject";
  config.rejectInvalidBodies = root.oneOf("invalid_body", ["reject", "allow"], "reject") == "reject";
  config.forwardHeaders = root.bool("forward_headers", true);
  config.filterState = root.bool("filter_state", true);
  config.holdHeaders = root.bool("hold_headers", false);
  config.holdHeadersTimeoutMs = readHoldHeadersTimeoutMs(root);

  const models = root.object("models");
  if (models != null) {
    const defaults = models.object("default");
    if (defaults != null) config.defaults = readLimits(defaults, "default", new ModelLimits());
    const entries = root.entries("models");
    for (let i = 0; i < entries.length; i++) {
      const entry = unchecked(entries[i]);
      if (entry.name == "default") continue;
      const pattern = ModelPattern.parse(entry.name);
      if (pattern == null) {
        errors.add(entry.config.path, "a model name may end in * (a prefix match) but contain no other *");
        continue;
      }
      config.models.add(pattern, readLimits(entry.config, entry.name, config.defaults));
    }
  }

  config.maxBufferBytes = config.defaults.maxBodyBytes;
  config.mayRewriteBody = config.defaults.outputLimitAction == OutputLimitAction.Clamp;
  for (let i = 0; i < config.models.values.length; i++) {
    const limit = unchecked(config.models.values[i]).maxBodyBytes;
    if (limit > config.maxBufferBytes) config.maxBufferBytes = limit;
    if (unchecked(config.models.values[i]).outputLimitAction == OutputLimitAction.Clamp) config.mayRewriteBody = true;
  }

  const limitsModels = config.rejectUnknownModels && config.models.size > 0;
  const modelList = root.oneOf("model_list", ["admitted", "upstream"], limitsModels ? "admitted" : "upstream");
  config.modelList = modelList == "admitted" ? ModelListMode.Admitted : ModelListMode.Upstream;

  return new ConfigResult<AdmissionConfig>(config, errors);
}
