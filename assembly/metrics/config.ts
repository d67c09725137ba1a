// The metrics filter's configuration: parsed and checked once per configure, then read by every
// request on the worker.
import { ConfigErrors, ConfigObject, ConfigResult, parseConfig } from "../json/config-reader";
import { isLabelSafe, MAX_LABEL_VALUE_LENGTH } from "../telemetry/metric-names";
import { ModelPattern, ModelTable } from "../llm/model-table";
import { asciiLower } from "../text/ascii";

export const DEFAULT_MAX_MODELS: i64 = 20;
export const DEFAULT_MAX_TENANTS: i64 = 20;
export const DEFAULT_MAX_SERIES: i64 = 4096;
export const DEFAULT_MAX_BODY_BYTES: i64 = 524288;
const MAX_SLOTS: i64 = 1000;
const MAX_SERIES_LIMIT: i64 = 1_000_000;
const MAX_BODY_BYTES_LIMIT: i64 = 64 * 1048576;

const TOP_KEYS: string[] = ["models", "max_models", "tenant_header", "tenant_label", "max_tenants", "max_series", "read_body", "max_body_bytes", "records"];

export class MetricsConfig {
  /** Models always labelled; the value is the label (the name, or a prefix pattern as written). */
  models: ModelTable<string> = new ModelTable<string>();
  /** How many other distinct model names may get their own label, across all workers. */
  maxModels: i32 = <i32>DEFAULT_MAX_MODELS;
  /** Request header naming the tenant; empty: none. */
  tenantHeader: string = "";
  tenantLabel: bool = false;
  maxTenants: i32 = <i32>DEFAULT_MAX_TENANTS;
  /** Distinct metric series one worker defines at most. */
  maxSeries: i32 = <i32>DEFAULT_MAX_SERIES;
  /** Read the model from the body when no earlier llm-mesh filter published the request's facts. */
  readBody: bool = true;
  /** The most the filter buffers to read a body; below Envoy's buffer limit, or Envoy answers 413 itself. */
  maxBodyBytes: i64 = DEFAULT_MAX_BODY_BYTES;
  /** Leave the per-request record as filter state for the access log. */
  records: bool = true;

  /** The configured label for a model, or null when the model is not listed. */
  configuredLabel(model: string): string | null {
    return this.models.find(model);
  }
}

export function parseMetricsConfig(text: string): ConfigResult<MetricsConfig> {
  return parseConfig<MetricsConfig>(text, readMetricsConfig);
}

/** The configuration from its parsed JSON object (alone, or a section of llm-mesh's one-module configuration). */
export function readMetricsConfig(root: ConfigObject, errors: ConfigErrors): ConfigResult<MetricsConfig> {
  root.onlyKeys(TOP_KEYS);
  const config = new MetricsConfig();

  const models = root.strings("models", []);
  for (let i = 0; i < models.length; i++) {
    const name = unchecked(models[i]);
    const path = "models[" + i.toString() + "]";
    const pattern = ModelPattern.parse(name);
    if (pattern == null) {
      errors.add(path, "a model name may end in * (a prefix match) but contain no other *");
      continue;
    }
    // The label is the name as written; "*" is the one character allowed beyond the label alphabet.
    const plain = pattern.prefix ? pattern.text : name;
    if (pattern.prefix && plain.length == 0) {
      errors.add(path, "\"*\" alone would label every model with one value; list names or prefixes");
      continue;
    }
    if (!isLabelSafe(plain)) {
      errors.add(path, "must be at most " + MAX_LABEL_VALUE_LENGTH.toString() + " characters from A-Z a-z 0-9 - . _ / @ + :, got \"" + name + "\"");
      continue;
    }
    config.models.add(pattern, name);
  }

  config.maxModels = <i32>root.int("max_models", DEFAULT_MAX_MODELS, 0, MAX_SLOTS);
  config.tenantHeader = asciiLower(root.string("tenant_header", ""));
  config.tenantLabel = root.bool("tenant_label", false);
  config.maxTenants = <i32>root.int("max_tenants", DEFAULT_MAX_TENANTS, 0, MAX_SLOTS);
  if (config.tenantLabel && config.tenantHeader.length == 0) {
    errors.add("tenant_label", "needs tenant_header: the tenant is read from that request header");
  }
  config.maxSeries = <i32>root.int("max_series", DEFAULT_MAX_SERIES, 16, MAX_SERIES_LIMIT);
  config.readBody = root.bool("read_body", true);
  config.maxBodyBytes = root.int("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 1, MAX_BODY_BYTES_LIMIT);
  config.records = root.bool("records", true);

  return new ConfigResult<MetricsConfig>(config, errors);
}
