// Typed reads from a parsed plugin configuration. Every problem is recorded with the path of the
// field and the reason, so a refused config tells the operator exactly what to change. Only the
// first problem is kept: fixing it and retrying is the expected loop.
import { JsonKind } from "./reader";
import { JsonValue, parseJson } from "./value";

/** How an error names the configuration as a whole. */
const WHOLE_CONFIG = "(config)";

export class ConfigErrors {
  message: string = "";

  add(path: string, reason: string): void {
    if (this.message.length == 0) this.message = (path.length > 0 ? path : WHOLE_CONFIG) + ": " + reason;
  }

  /** Takes a section's first problem, the section's name in front of its path ("throttle.rules[0].rps: ..."). */
  addSection(section: string, inner: ConfigErrors): void {
    if (inner.ok || !this.ok) return;
    const message = inner.message;
    this.message = message.startsWith(WHOLE_CONFIG + ": ") ? section + message.slice(WHOLE_CONFIG.length) : section + "." + message;
  }

  get ok(): bool {
    return this.message.length == 0;
  }
}

function describe(value: JsonValue): string {
  switch (value.kind) {
    case JsonKind.String: return "\"" + (value.text.length > 40 ? value.text.slice(0, 40) + "..." : value.text) + "\"";
    case JsonKind.Number: return value.isInteger && Math.abs(value.number) < 1e15 ? (<i64>value.number).toString() : numberText(value.number);
    case JsonKind.True: return "true";
    case JsonKind.False: return "false";
    default: return value.kindName();
  }
}

/**
 * A number as an error message shows it: "0.0", "1.5", "0.001", up to six decimals, and "1e+300" or
 * "1e-9" beyond that range. f64's own toString (shortest round trip) would bring the standard
 * library's Grisu code and tables, 3 KiB of every module, for these messages alone.
 */
export function numberText(x: f64): string {
  if (isNaN(x)) return "NaN";
  const sign = x < 0 ? "-" : "";
  let m = Math.abs(x);
  if (m == Infinity) return sign + "Infinity";
  if (m != 0 && (m >= 1e15 || m < 1e-6)) {
    let exponent = 0;
    for (; m >= 10; exponent++) m /= 10;
    for (; m < 1; exponent--) m *= 10;
    // What would print as "10" is the next power of ten.
    if (m >= 9.9999995) {
      m = 1;
      exponent++;
    }
    return sign + fixedText(m, false) + (exponent < 0 ? "e-" : "e+") + abs(exponent).toString();
  }
  return sign + fixedText(m, true);
}

/** A non-negative number below 1e15 with up to six decimals, trailing zeros dropped (but "2.0" with `pointZero`). */
function fixedText(x: f64, pointZero: bool): string {
  let whole = Math.floor(x);
  let millionths = Math.round((x - whole) * 1e6);
  if (millionths >= 1e6) {
    whole += 1;
    millionths = 0;
  }
  const text = (<i64>whole).toString();
  if (millionths == 0) return pointZero ? text + ".0" : text;
  let decimals = (<i64>millionths).toString();
  decimals = "000000".slice(decimals.length) + decimals;
  let end = decimals.length;
  while (decimals.charCodeAt(end - 1) == 0x30) end--;
  return text + "." + decimals.slice(0, end);
}

function join(path: string, key: string): string {
  return path.length > 0 ? path + "." + key : key;
}

export class ConfigObject {
  constructor(public value: JsonValue, public path: string, public errors: ConfigErrors) {}

  /** Refuses keys outside `allowed`: a misspelt key would otherwise be silently ignored. */
  onlyKeys(allowed: string[]): void {
    for (let i = 0; i < this.value.keys.length; i++) {
      const key = unchecked(this.value.keys[i]);
      if (!allowed.includes(key)) this.errors.add(join(this.path, key), "unknown key (allowed: " + allowed.join(", ") + ")");
    }
  }

  has(key: string): bool {
    return this.value.get(key) != null;
  }

  fieldPath(key: string): string {
    return join(this.path, key);
  }

  int(key: string, fallback: i64, min: i64, max: i64): i64 {
    const v = this.value.get(key);
    if (v == null) return fallback;
    if (v.kind != JsonKind.Number || !v.isInteger || v.number < <f64>min || v.number > <f64>max) {
      this.errors.add(join(this.path, key), "must be an integer from " + min.toString() + " to " + max.toString() + ", got " + describe(v));
      return fallback;
    }
    return <i64>v.number;
  }

  number(key: string, fallback: f64, min: f64, max: f64): f64 {
    const v = this.value.get(key);
    if (v == null) return fallback;
    if (v.kind != JsonKind.Number || v.number < min || v.number > max) {
      this.errors.add(join(this.path, key), "must be a number from " + numberText(min) + " to " + numberText(max) + ", got " + describe(v));
      return fallback;
    }
    return v.number;
  }

  bool(key: string, fallback: bool): bool {
    const v = this.value.get(key);
    if (v == null) return fallback;
    if (v.kind != JsonKind.True && v.kind != JsonKind.False) {
      this.errors.add(join(this.path, key), "must be true or false, got " + describe(v));
      return fallback;
    }
    return v.bool;
  }

  string(key: string, fallback: string): string {
    const v = this.value.get(key);
    if (v == null) return fallback;
    if (v.kind != JsonKind.String) {
      this.errors.add(join(this.path, key), "must be a string, got " + describe(v));
      return fallback;
    }
    return v.text;
  }

  /** A non-empty string. */
  name(key: string, fallback: string): string {
    const text = this.string(key, fallback);
    if (this.has(key) && text.length == 0) this.errors.add(join(this.path, key), "must not be empty");
    return text;
  }

  oneOf(key: string, allowed: string[], fallback: string): string {
    const text = this.string(key, fallback);
    if (!allowed.includes(text)) {
      this.errors.add(join(this.path, key), "must be one of " + allowed.join(", ") + ", got \"" + text + "\"");
      return fallback;
    }
    return text;
  }

  object(key: string): ConfigObject | null {
    const v = this.value.get(key);
    if (v == null) return null;
    if (v.kind != JsonKind.Object) {
      this.errors.add(join(this.path, key), "must be an object, got " + describe(v));
      return null;
    }
    return new ConfigObject(v, join(this.path, key), this.errors);
  }

  /** The elements of an array field; empty when absent or wrong (the wrong case is recorded). */
  array(key: string): JsonValue[] {
    const v = this.value.get(key);
    if (v == null) return [];
    if (v.kind != JsonKind.Array) {
      this.errors.add(join(this.path, key), "must be an array, got " + describe(v));
      return [];
    }
    return v.items;
  }

  /** Each element of an array field as an object, with its indexed path. */
  objects(key: string): ConfigObject[] {
    const items = this.array(key);
    const out: ConfigObject[] = [];
    for (let i = 0; i < items.length; i++) {
      const item = unchecked(items[i]);
      const path = join(this.path, key) + "[" + i.toString() + "]";
      if (item.kind != JsonKind.Object) {
        this.errors.add(path, "must be an object, got " + describe(item));
        continue;
      }
      out.push(new ConfigObject(item, path, this.errors));
    }
    return out;
  }

  strings(key: string, fallback: string[]): string[] {
    if (!this.has(key)) return fallback;
    const items = this.array(key);
    const out: string[] = [];
    for (let i = 0; i < items.length; i++) {
      const item = unchecked(items[i]);
      if (item.kind != JsonKind.String || item.text.length == 0) {
        this.errors.add(join(this.path, key) + "[" + i.toString() + "]", "must be a non-empty string, got " + describe(item));
        continue;
      }
      out.push(item.text);
    }
    return out;
  }

  /** Members of an object-valued field, each as a ConfigObject keyed by its name. */
  entries(key: string): ConfigEntry[] {
    const obj = this.object(key);
    const out: ConfigEntry[] = [];
    if (obj == null) return out;
    for (let i = 0; i < obj.value.keys.length; i++) {
      const name = unchecked(obj.value.keys[i]);
      const v = unchecked(obj.value.values[i]);
      const path = join(obj.path, name);
      if (v.kind != JsonKind.Object) {
        this.errors.add(path, "must be an object, got " + describe(v));
        continue;
      }
      out.push(new ConfigEntry(name, new ConfigObject(v, path, this.errors)));
    }
    return out;
  }
}

/** A filter's configuration read in full, or the first problem found in it. */
export class ConfigResult<T> {
  config: T | null = null;
  error: string = "";

  /** `config` when reading it recorded no problem in `errors`, else the problem. */
  constructor(config: T, errors: ConfigErrors) {
    if (errors.ok) this.config = config;
    else this.error = errors.message;
  }
}

/** A filter's configuration from its text alone (unit tests, the kernels), with the filter's own reader. */
export function parseConfig<T>(text: string, read: (root: ConfigObject, errors: ConfigErrors) => ConfigResult<T>): ConfigResult<T> {
  const errors = new ConfigErrors();
  return read(readConfigRoot(text, errors), errors);
}

export class ConfigEntry {
  constructor(public name: string, public config: ConfigObject) {}
}

/**
 * Parses a plugin configuration text into its root object. An empty text means "all defaults",
 * which is how Envoy delivers a plugin with no configuration.
 */
export function readConfigRoot(text: string, errors: ConfigErrors): ConfigObject {
  const trimmed = text.trim();
  const parsed = parseJson(trimmed.length == 0 ? "{}" : trimmed);
  const value = parsed.value;
  if (value == null) {
    errors.add("", "not valid JSON: " + parsed.error);
    return new ConfigObject(new JsonValue(), "", errors);
  }
  if (value.kind != JsonKind.Object) {
    errors.add("", "must be a JSON object, got " + value.kindName());
    return new ConfigObject(new JsonValue(), "", errors);
  }
  return new ConfigObject(value, "", errors);
}
