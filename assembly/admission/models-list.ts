// The gateway's model list as plain functions of the configuration and what the model server
// answered: `GET /v1/models` lists exactly the models a request may name, and `GET /v1/models/{id}`
// for a model this filter refuses is answered 404 without asking the model server. The stream side
// (models-list-stream.ts) only moves headers and bodies between Envoy and these.
//
// A listed model is one admission admits (an exact name or a `*` prefix of `models`), unless it is
// a name the router sends upstream in place of the client's (a canary's or the shadow's
// `rewrite_model`): those exist only behind the router, and are listed only when `models` names
// them exactly. The model server's entries keep their fields; a client that sends
// `anthropic-version` gets Anthropic's list shape.
import { ApiError } from "../llm/api-errors";
import { ByteWriter } from "../text/byte-writer";
import { JsonKind, JsonReader } from "../json/reader";
import { jsonQuote } from "../json/writer";
import { ModelsRequest } from "../llm/models-api";
import { AdmissionConfig } from "./config";
import { isPlainEncoding } from "./policy";

/** What to make of the model server's answer, decided from its headers. */
export enum ListPlan {
  /** Read the body and answer its entries that are listed. */
  Filter = 0,
  /** No list to read (an error, no body, an encoding, or more than may be buffered): answer from the configuration. */
  FromConfig,
  /** Pass it on as it is: the model server refused the client's credentials, which a list would hide. */
  Untouched,
}

/** `created_at` for a model whose creation time nobody said. */
const UNKNOWN_CREATED_AT = "1970-01-01T00:00:00Z";
/** `owned_by` of the entries the configuration provides. */
const CONFIG_OWNER = "llm-mesh";

/** A retrieve of a model admission refuses: the 404 to answer; null when the model server may answer. */
export function retrieveRefusal(config: AdmissionConfig, request: ModelsRequest): ApiError | null {
  if (config.limitsFor(request.id) != null) return null;
  return new ApiError(404, "model_not_found", "The model `" + request.id + "` is not served here; allowed: " + config.models.names().join(", ") + ".", "model");
}

export function isExactName(config: AdmissionConfig, model: string): bool {
  const patterns = config.models.patterns;
  for (let i = 0, n = patterns.length; i < n; i++) {
    const pattern = unchecked(patterns[i]);
    if (!pattern.prefix && pattern.text == model) return true;
  }
  return false;
}

/** Whether the list shows a model: admitted, and not a name that exists only behind the router. */
export function isListed(config: AdmissionConfig, model: string, routerOnly: string[]): bool {
  if (config.limitsFor(model) == null) return false;
  return !routerOnly.includes(model) || isExactName(config, model);
}

export function planList(status: i32, contentEncoding: string | null, declaredLength: i64, endOfStream: bool, limit: i64): ListPlan {
  if (status == 401 || status == 403) return ListPlan.Untouched;
  if (status < 200 || status > 299 || endOfStream) return ListPlan.FromConfig;
  if (!isPlainEncoding(contentEncoding) || declaredLength > limit) return ListPlan.FromConfig;
  return ListPlan.Filter;
}

/** One entry of the model server's `data`, where it lies in the body and what the other shape needs of it. */
class Entry {
  id: string = "";
  start: i32 = 0;
  end: i32 = 0;
  /** OpenAI's `created`, in seconds; -1 when absent. */
  created: i64 = -1;
  /** Anthropic's fields; null when absent. */
  createdAt: string | null = null;
  displayName: string | null = null;
  /** `type: "model"`, as every entry of Anthropic's list has it. */
  typedModel: bool = false;

  get anthropicShaped(): bool {
    return this.typedModel && this.createdAt != null;
  }
}

/** The model server's list, read: its entries (each with a string `id`) and Anthropic's `has_more`. */
class UpstreamList {
  entries: Entry[] = [];
  hasMore: bool = false;
}

/**
 * Reads a list answer, `{"data": [{"id": ...}, ...], ...}` in either vendor's shape; null when the
 * body is none (not JSON, no `data` array, `data` twice). Entries without a string `id`, or with two,
 * cannot be judged and are left out.
 */
function readList(body: Uint8Array): UpstreamList | null {
  const reader = new JsonReader(body);
  if (reader.peek() != JsonKind.Object) return null;
  const list = new UpstreamList();
  let sawData = false;
  reader.enterObject();
  while (reader.nextMember()) {
    if (reader.keyIs("data")) {
      if (sawData || reader.peek() != JsonKind.Array) return null;
      sawData = true;
      reader.enterArray();
      while (reader.nextElement()) {
        if (reader.peek() != JsonKind.Object) {
          reader.skipValue();
          continue;
        }
        const entry = readEntry(reader);
        if (entry != null) list.entries.push(entry);
      }
    } else if (reader.keyIs("has_more") && reader.peek() == JsonKind.True) {
      list.hasMore = reader.readBool();
    } else {
      reader.skipValue();
    }
  }
  if (!reader.finish() || !sawData) return null;
  return list;
}

function readEntry(reader: JsonReader): Entry | null {
  const entry = new Entry();
  entry.start = reader.offset;
  let ids = 0;
  reader.enterObject();
  while (reader.nextMember()) {
    const kind = reader.peek();
    if (reader.keyIs("id") && kind == JsonKind.String) {
      ids++;
      const id = reader.readString();
      if (id != null) entry.id = id;
    } else if (reader.keyIs("id")) {
      ids += 2;
      reader.skipValue();
    } else if (reader.keyIs("created") && kind == JsonKind.Number) {
      const seconds = reader.readNumber();
      if (reader.isInteger && seconds >= 0 && seconds <= MAX_SECONDS) entry.created = <i64>seconds;
    } else if (reader.keyIs("created_at") && kind == JsonKind.String) {
      entry.createdAt = reader.readString();
    } else if (reader.keyIs("display_name") && kind == JsonKind.String) {
      entry.displayName = reader.readString();
    } else if (reader.keyIs("type") && kind == JsonKind.String) {
      const type = reader.readString();
      entry.typedModel = type != null && type == "model";
    } else {
      reader.skipValue();
    }
  }
  entry.end = reader.offset;
  return ids == 1 && !reader.failed ? entry : null;
}

/**
 * The answer to a list request from the model server's answer: its listed entries, fields kept, in
 * OpenAI's shape (`{"object":"list","data":[...]}`) or, for an Anthropic client, Anthropic's (entries
 * the model server wrote in OpenAI's shape converted). Null when the body is no list.
 */
export function filteredList(config: AdmissionConfig, body: Uint8Array, anthropic: bool, routerOnly: string[]): Uint8Array | null {
  const list = readList(body);
  if (list == null) return null;
  const out = new ByteWriter(body.length + 64);
  out.text(anthropic ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[");
  let first: string | null = null;
  let last: string | null = null;
  for (let i = 0, n = list.entries.length; i < n; i++) {
    const entry = unchecked(list.entries[i]);
    if (!isListed(config, entry.id, routerOnly)) continue;
    if (first != null) out.text(",");
    else first = entry.id;
    last = entry.id;
    if (anthropic && !entry.anthropicShaped) out.text(anthropicEntry(entry.id, entry.displayName, entry.created >= 0 ? isoUtc(entry.created) : UNKNOWN_CREATED_AT));
    else out.bytes(body, entry.start, entry.end);
  }
  out.text(anthropic ? "]," + anthropicPaging(list.hasMore, first, last) + "}" : "]}");
  return out.finish();
}

/**
 * The list the configuration gives, for when the model server has none: the exact names of `models`
 * (a prefix names no model), in the order configured.
 */
export function configuredList(config: AdmissionConfig, anthropic: bool): Uint8Array {
  const out = new ByteWriter(256);
  out.text(anthropic ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[");
  let first: string | null = null;
  let last: string | null = null;
  const patterns = config.models.patterns;
  for (let i = 0, n = patterns.length; i < n; i++) {
    const pattern = unchecked(patterns[i]);
    if (pattern.prefix) continue;
    const id = pattern.text;
    if (first != null) out.text(",");
    else first = id;
    last = id;
    if (anthropic) out.text(anthropicEntry(id, null, UNKNOWN_CREATED_AT));
    else out.text("{\"id\":" + jsonQuote(id) + ",\"object\":\"model\",\"created\":0,\"owned_by\":\"" + CONFIG_OWNER + "\"}");
  }
  out.text(anthropic ? "]," + anthropicPaging(false, first, last) + "}" : "]}");
  return out.finish();
}

function anthropicEntry(id: string, displayName: string | null, createdAt: string): string {
  return "{\"type\":\"model\",\"id\":" + jsonQuote(id) + ",\"display_name\":" + jsonQuote(displayName != null ? displayName : id) +
    ",\"created_at\":" + jsonQuote(createdAt) + "}";
}

/** Anthropic's cursors name the first and last entry shown, so a refused name never leaks through them. */
function anthropicPaging(hasMore: bool, first: string | null, last: string | null): string {
  return "\"has_more\":" + (hasMore ? "true" : "false") + ",\"first_id\":" + (first != null ? jsonQuote(first) : "null") +
    ",\"last_id\":" + (last != null ? jsonQuote(last) : "null");
}

/** 9999-12-31T23:59:59Z: later `created` values are not dates. */
const MAX_SECONDS: f64 = 253402300799;

/** Seconds since 1970 as RFC 3339 UTC (`2024-07-18T00:00:00Z`), the form of Anthropic's `created_at`. */
export function isoUtc(seconds: i64): string {
  const days = seconds / 86400;
  const second = <i32>(seconds % 86400);
  // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), for days >= 0.
  const z = days + 719468;
  const era = z / 146097;
  const dayOfEra = z - era * 146097;
  const yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146096) / 365;
  const dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100);
  const monthIndex = (5 * dayOfYear + 2) / 153;
  const day = dayOfYear - (153 * monthIndex + 2) / 5 + 1;
  const month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9;
  const year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  return pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T" + pad(second / 3600, 2) + ":" + pad((second / 60) % 60, 2) + ":" + pad(second % 60, 2) + "Z";
}

function pad(value: i64, width: i32): string {
  return value.toString().padStart(width, "0");
}
