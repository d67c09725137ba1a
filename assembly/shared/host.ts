// The one place that talks to the proxy-wasm host. Everything here returns a result instead of
// throwing: a trap in a request path would fail the stream (or, under FAIL_RELOAD, reload the VM).
import { asciiLowerCode, sameAsciiText } from "./ascii";
import { noteHostBytes } from "./collector";
import { ContextTable } from "./context-table";
import * as imports from "./proxy-imports";

/** proxy_log's levels, as the ABI numbers them. */
export enum LogLevelValues { trace, debug, info, warn, error, critical }

const OK: u32 = 0;
const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;
const PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_REQUEST: u32 = 0;
const STREAM_RESPONSE: u32 = 1;
const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;
const METRIC_HISTOGRAM: u32 = 2;

// Static out-parameters for the host to write into: calls run one at a time on a VM's thread.
const RETURNED_DATA: usize = memory.data(4, 4);
const RETURNED_SIZE: usize = memory.data(4, 4);
const OUT_U32: usize = memory.data(4, 4);
const OUT_U64: usize = memory.data(8, 8);

/**
 * The host's way into the module's memory: Envoy calls it for the bytes a call hands back, writes
 * them there and passes their address out. Each block is a fresh ArrayBuffer, pinned so that the
 * collector keeps it until takeReturned adopts it; the caller then owns it, without a copy.
 */
export function malloc(size: usize): usize {
  noteHostBytes(size);
  return __pin(changetype<usize>(new ArrayBuffer(<i32>size)));
}

/**
 * The bytes the last call handed back; call it once after every call that returned OK with data
 * out-parameters (Envoy allocates only then; an empty answer comes with address 0 and no block).
 */
function takeReturned(): ArrayBuffer {
  const data = load<usize>(RETURNED_DATA);
  if (data == 0) return new ArrayBuffer(0);
  // Cleared so that a call that hands nothing back and leaves the slot alone reads as empty
  // instead of unpinning this block a second time (which traps).
  store<usize>(RETURNED_DATA, 0);
  __unpin(data);
  return changetype<ArrayBuffer>(data);
}

function utf8(text: string): ArrayBuffer {
  return String.UTF8.encode(text);
}

// ---- logging ----

export function log(level: LogLevelValues, message: string): void {
  const bytes = utf8(message);
  imports.proxy_log(<u32>level, changetype<usize>(bytes), bytes.byteLength);
}

/** The host's current log level, so callers can skip building debug text nobody will see. */
export function logLevel(): LogLevelValues {
  if (imports.proxy_get_log_level(OUT_U32) != OK) return LogLevelValues.info;
  return <LogLevelValues>load<u32>(OUT_U32);
}

/** Logs with the filter name and context id in front, as every llm-mesh log line starts. */
export class Logger {
  constructor(public filter: string) {}

  line(contextId: u32, message: string): string {
    return this.filter + "[" + contextId.toString() + "]: " + message;
  }

  debugEnabled(): bool {
    return logLevel() <= LogLevelValues.debug;
  }

  debug(contextId: u32, message: string): void {
    log(LogLevelValues.debug, this.line(contextId, message));
  }

  info(contextId: u32, message: string): void {
    log(LogLevelValues.info, this.line(contextId, message));
  }

  warn(contextId: u32, message: string): void {
    log(LogLevelValues.warn, this.line(contextId, message));
  }

  error(contextId: u32, message: string): void {
    log(LogLevelValues.error, this.line(contextId, message));
  }

  critical(contextId: u32, message: string): void {
    log(LogLevelValues.critical, this.line(contextId, message));
  }
}

// ---- plugin configuration ----

export function pluginConfiguration(size: u32): string {
  if (size == 0) return "";
  const result = imports.proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, RETURNED_DATA, RETURNED_SIZE);
  if (result != OK) return "";
  return String.UTF8.decode(takeReturned());
}

// ---- what the host answered during this callback ----
//
// A host call that hands data back costs Envoy 1.5–4 µs, up to a third of a 1 KB request's JSON scan
// (measured with `npm run bench -- --host-call-costs`), and a callback often asks the same map
// several times: the method, the path, the rule headers, the internal headers it strips. One
// proxy_get_header_map_pairs answers them all, and the clock and each property are read once; all
// are forgotten when the next callback begins, since other filters may change them between
// callbacks and a tick serves several streams.

/** The headers of one map as the host serialized them: count, then (name size, value size) pairs, then NUL-ended bytes. */
class HeaderSnapshot {
  bytes: ArrayBuffer | null = null;
  /** The size of the value find() found last. */
  valueSize: i32 = 0;
  /** Headers this callback set since the snapshot was taken; they win over the snapshot's bytes. */
  setNames: string[] = [];
  setValues: string[] = [];

  constructor(public map: u32) {}

  clear(): void {
    this.bytes = null;
    this.setNames.length = 0;
    this.setValues.length = 0;
  }

  /** The value this callback set for `name`, or null when it set none. */
  setValue(name: string): string | null {
    for (let i = 0, n = this.setNames.length; i < n; i++) {
      if (sameAsciiText(unchecked(this.setNames[i]), name)) return unchecked(this.setValues[i]);
    }
    return null;
  }

  /** After the host replaced `name`'s values with `value`. */
  recordSet(name: string, value: string): void {
    this.forget(name);
    if (this.bytes == null) return;
    for (let i = 0, n = this.setNames.length; i < n; i++) {
      if (sameAsciiText(unchecked(this.setNames[i]), name)) {
        unchecked((this.setValues[i] = value));
        return;
      }
    }
    this.setNames.push(name);
    this.setValues.push(value);
  }

  /** After the host removed `name`. */
  recordRemoval(name: string): void {
    this.forget(name);
    for (let i = 0, n = this.setNames.length; i < n; i++) {
      if (sameAsciiText(unchecked(this.setNames[i]), name)) {
        this.setNames.splice(i, 1);
        this.setValues.splice(i, 1);
        return;
      }
    }
  }

  /** Whether the host answered; false sends every question to the host instead. */
  load(): bool {
    if (this.bytes != null) return true;
    if (imports.proxy_get_header_map_pairs(this.map, RETURNED_DATA, RETURNED_SIZE) != OK) return false;
    this.bytes = takeReturned();
    return true;
  }

  /**
   * Byte offset of the first value of `name` (matched without regard to ASCII case, as Envoy
   * does), -1 when absent, -2 when the snapshot cannot say (a non-ASCII name, bytes out of shape).
   * The value's size is left in valueSize.
   */
  find(name: string): i32 {
    const bytes = this.bytes!;
    const base = changetype<usize>(bytes);
    const size = bytes.byteLength;
    if (size < 4) return -1;
    const count = <i32>load<u32>(base);
    if (count < 0 || count > (size - 4) >> 3) return -2;
    let cursor = 4 + (count << 3);
    const nameLength = name.length;
    for (let i = 0; i < count; i++) {
      const keySize = <i32>load<u32>(base + 4 + (i << 3));
      const valueSize = <i32>load<u32>(base + 8 + (i << 3));
      const key = cursor;
      const value = key + keySize + 1;
      cursor = value + valueSize + 1;
      if (keySize < 0 || valueSize < 0 || cursor > size) return -2;
      if (keySize == nameLength && sameAsciiName(base + key, name)) {
        this.valueSize = valueSize;
        return value;
      }
    }
    for (let i = 0; i < nameLength; i++) if (name.charCodeAt(i) >= 0x80) return -2;
    return -1;
  }

  /** Entries of `name` stop matching (a name never starts with NUL). */
  private forget(name: string): void {
    if (this.bytes == null) return;
    for (let at = this.find(name); at >= 0; at = this.find(name)) {
      store<u8>(changetype<usize>(this.bytes) + at - name.length - 1, 0);
    }
    if (this.find(name) == -2) this.bytes = null;
  }
}

function sameAsciiName(bytes: usize, name: string): bool {
  for (let i = 0, n = name.length; i < n; i++) if (asciiLowerCode(<i32>load<u8>(bytes + i)) != asciiLowerCode(name.charCodeAt(i))) return false;
  return true;
}

const requestHeadersOfThisCallback = new HeaderSnapshot(REQUEST_HEADERS);
const responseHeadersOfThisCallback = new HeaderSnapshot(RESPONSE_HEADERS);
let nowNanosOfThisCallback: u64 = 0;
const propertiesAskedInThisCallback = new Array<string>();
const propertyAnswersOfThisCallback = new Array<ArrayBuffer | null>();
/** Counts local responses sent: a stage that sent one has ended the stream (mesh/filter.ts compares counts). */
let localResponseCount: u32 = 0;

/** The stream (or root) the host calls of this callback act on. */
let currentContextId: u32 = 0;

/** abi.ts calls this as every callback begins, and setEffectiveContext when a tick turns to another stream. */
export function beginCallback(contextId: u32): void {
  currentContextId = contextId;
  requestHeadersOfThisCallback.clear();
  responseHeadersOfThisCallback.clear();
  nowNanosOfThisCallback = 0;
  propertiesAskedInThisCallback.length = 0;
  propertyAnswersOfThisCallback.length = 0;
}

/** How many local responses this VM has sent; a change across a call means the call ended its stream. */
export function localResponsesSent(): u32 {
  return localResponseCount;
}

// ---- headers ----

function snapshotOf(map: u32): HeaderSnapshot {
  return map == REQUEST_HEADERS ? requestHeadersOfThisCallback : responseHeadersOfThisCallback;
}

function getHeader(map: u32, name: string): string | null {
  const snapshot = snapshotOf(map);
  if (snapshot.load()) {
    const set = snapshot.setValue(name);
    if (set != null) return set;
    const at = snapshot.find(name);
    if (at == -1) return null;
    if (at >= 0) return String.UTF8.decodeUnsafe(changetype<usize>(snapshot.bytes) + at, snapshot.valueSize);
  }
  const key = utf8(name);
  const result = imports.proxy_get_header_map_value(map, changetype<usize>(key), key.byteLength, RETURNED_DATA, RETURNED_SIZE);
  if (result != OK) return null;
  return String.UTF8.decode(takeReturned());
}

function setHeader(map: u32, name: string, value: string): bool {
  const key = utf8(name);
  const bytes = utf8(value);
  const done = imports.proxy_replace_header_map_value(map, changetype<usize>(key), key.byteLength, changetype<usize>(bytes), bytes.byteLength) == OK;
  const snapshot = snapshotOf(map);
  if (done) snapshot.recordSet(name, value);
  else snapshot.clear();
  return done;
}

function removeHeader(map: u32, name: string): bool {
  const snapshot = snapshotOf(map);
  // Removing what is not there is what most calls do (the internal headers no client sent).
  if (snapshot.bytes != null && snapshot.setValue(name) == null && snapshot.find(name) == -1) return true;
  const key = utf8(name);
  const removed = imports.proxy_remove_header_map_value(map, changetype<usize>(key), key.byteLength) == OK;
  if (removed) snapshot.recordRemoval(name);
  else snapshot.clear();
  return removed;
}

/** A request header's value, or null when absent (an empty value is not absent). */
export function requestHeader(name: string): string | null {
  return getHeader(REQUEST_HEADERS, name);
}

export function setRequestHeader(name: string, value: string): bool {
  return setHeader(REQUEST_HEADERS, name, value);
}

/** Reads the headers first, so that removing a header nobody sent costs no host call. */
export function removeRequestHeader(name: string): bool {
  requestHeadersOfThisCallback.load();
  return removeHeader(REQUEST_HEADERS, name);
}

export function responseHeader(name: string): string | null {
  return getHeader(RESPONSE_HEADERS, name);
}

export function setResponseHeader(name: string, value: string): bool {
  return setHeader(RESPONSE_HEADERS, name, value);
}

export function removeResponseHeader(name: string): bool {
  responseHeadersOfThisCallback.load();
  return removeHeader(RESPONSE_HEADERS, name);
}

// ---- bodies ----

function bufferBytes(buffer: u32, start: u32, length: u32): Uint8Array {
  if (length == 0) return new Uint8Array(0);
  const result = imports.proxy_get_buffer_bytes(buffer, start, length, RETURNED_DATA, RETURNED_SIZE);
  if (result != OK) return new Uint8Array(0);
  return Uint8Array.wrap(takeReturned());
}

export function requestBody(start: u32, length: u32): Uint8Array {
  return bufferBytes(REQUEST_BODY, start, length);
}

export function responseBody(start: u32, length: u32): Uint8Array {
  return bufferBytes(RESPONSE_BODY, start, length);
}

/** Replaces the first `length` bytes of the buffered request body. */
export function replaceRequestBody(length: u32, bytes: Uint8Array): bool {
  return imports.proxy_set_buffer_bytes(REQUEST_BODY, 0, length, changetype<usize>(bytes.buffer) + bytes.byteOffset, bytes.byteLength) == OK;
}

/** Replaces the first `length` bytes of the buffered response body (in this callback's chunk, or all of it when buffered). */
export function replaceResponseBody(length: u32, bytes: Uint8Array): bool {
  return imports.proxy_set_buffer_bytes(RESPONSE_BODY, 0, length, changetype<usize>(bytes.buffer) + bytes.byteOffset, bytes.byteLength) == OK;
}

// ---- local responses ----

/** Header pairs for a local response, serialized as the ABI wants them. */
export class ResponseHeaders {
  names: string[] = [];
  values: string[] = [];

  add(name: string, value: string): ResponseHeaders {
    this.names.push(name);
    this.values.push(value);
    return this;
  }

  serialize(): ArrayBuffer {
    const names = new Array<ArrayBuffer>(this.names.length);
    const values = new Array<ArrayBuffer>(this.names.length);
    let size = 4;
    for (let i = 0; i < this.names.length; i++) {
      unchecked((names[i] = utf8(unchecked(this.names[i]))));
      unchecked((values[i] = utf8(unchecked(this.values[i]))));
      size += 8 + unchecked(names[i]).byteLength + 1 + unchecked(values[i]).byteLength + 1;
    }
    const out = new ArrayBuffer(size);
    const base = changetype<usize>(out);
    store<u32>(base, this.names.length);
    let sizes = base + 4;
    let data = base + 4 + 8 * this.names.length;
    for (let i = 0; i < this.names.length; i++) {
      const name = unchecked(names[i]);
      const value = unchecked(values[i]);
      store<u32>(sizes, name.byteLength);
      store<u32>(sizes + 4, value.byteLength);
      sizes += 8;
      memory.copy(data, changetype<usize>(name), name.byteLength);
      data += name.byteLength;
      store<u8>(data++, 0);
      memory.copy(data, changetype<usize>(value), value.byteLength);
      data += value.byteLength;
      store<u8>(data++, 0);
    }
    return out;
  }
}

/** Ends the stream with a response made here; `details` shows in Envoy's %RESPONSE_CODE_DETAILS%. */
export function sendResponse(status: u32, details: string, body: string, headers: ResponseHeaders): bool {
  localResponseCount++;
  const detailBytes = utf8(details);
  const bodyBytes = utf8(body);
  const headerBytes = headers.serialize();
  return imports.proxy_send_local_response(status, changetype<usize>(detailBytes), detailBytes.byteLength,
    changetype<usize>(bodyBytes), bodyBytes.byteLength, changetype<usize>(headerBytes), headerBytes.byteLength, -1) == OK;
}

// ---- properties and filter state ----

/** A host property by path segments; null when the host has none. Asked once per callback. */
export function property(segments: string[]): ArrayBuffer | null {
  const joined = segments.join("\0");
  const asked = propertiesAskedInThisCallback.indexOf(joined);
  if (asked >= 0) return unchecked(propertyAnswersOfThisCallback[asked]);
  const path = utf8(joined);
  const result = imports.proxy_get_property(changetype<usize>(path), path.byteLength, RETURNED_DATA, RETURNED_SIZE);
  const answer = result == OK ? takeReturned() : null;
  propertiesAskedInThisCallback.push(joined);
  propertyAnswersOfThisCallback.push(answer);
  return answer;
}

/** A numeric host property (Envoy encodes integers as 8 little-endian bytes), or -1 when absent. */
export function propertyInt(segments: string[]): i64 {
  const bytes = property(segments);
  if (bytes == null || bytes.byteLength != 8) return -1;
  return load<i64>(changetype<usize>(bytes));
}

const TOTAL_SIZE: string[] = ["request", "total_size"];

/**
 * The request body bytes Envoy has received so far, whether or not any filter was handed them; -1
 * when the host does not say. Envoy's `request.total_size` is those bytes plus the request header
 * map's byteSize(), which is what proxy_get_header_map_size answers.
 */
export function requestBodyBytesReceived(): i64 {
  const total = propertyInt(TOTAL_SIZE);
  if (total < 0 || imports.proxy_get_header_map_size(REQUEST_HEADERS, OUT_U32) != OK) return -1;
  const received = total - <i64>load<u32>(OUT_U32);
  return received >= 0 ? received : -1;
}

export function propertyString(segments: string[]): string | null {
  const bytes = property(segments);
  return bytes == null ? null : String.UTF8.decode(bytes);
}

// Filter state this VM set on a stream, kept until the stream is deleted: a reader in the same VM (a
// filter reading what it set, or in the one-module build every stage after the one that set it)
// needs no host call. Names registered with keepFilterStateInVm are never handed to the host at
// all: the one-module build's hand-overs between its stages, which nothing outside reads.

class StreamFilterState {
  names: string[] = [];
  values: string[] = [];

  constructor(public context_id: u32) {}

  set(name: string, value: string): void {
    const at = this.names.indexOf(name);
    if (at >= 0) unchecked((this.values[at] = value));
    else {
      this.names.push(name);
      this.values.push(value);
    }
  }

  get(name: string): string | null {
    const at = this.names.indexOf(name);
    return at >= 0 ? unchecked(this.values[at]) : null;
  }
}

const filterStateSetHere = new ContextTable<StreamFilterState>();
const filterStateKeptInVm = new Array<string>();

/** Filter state names that stay in this VM: only stages of the same module read them. */
export function keepFilterStateInVm(names: string[]): void {
  for (let i = 0; i < names.length; i++) filterStateKeptInVm.push(unchecked(names[i]));
}

/** Forgets what a deleted stream set (abi.ts, on proxy_on_delete). */
export function forgetStream(contextId: u32): void {
  filterStateSetHere.remove(contextId);
}

/**
 * Stores a value in the stream's filter state; Envoy keeps it as `wasm.<name>`, readable by later
 * Wasm filters with `filterState(name)` and by access logs with %FILTER_STATE(wasm.<name>:PLAIN)%.
 */
export function setFilterState(name: string, value: string): bool {
  let mine = filterStateSetHere.get(currentContextId);
  if (mine == null) {
    mine = new StreamFilterState(currentContextId);
    filterStateSetHere.add(mine);
  }
  mine.set(name, value);
  if (filterStateKeptInVm.includes(name)) return true;
  const path = utf8(name);
  const bytes = utf8(value);
  return imports.proxy_set_property(changetype<usize>(path), path.byteLength, changetype<usize>(bytes), bytes.byteLength) == OK;
}

export function filterState(name: string): string | null {
  const mine = filterStateSetHere.get(currentContextId);
  if (mine != null) {
    const value = mine.get(name);
    if (value != null) return value;
  }
  if (filterStateKeptInVm.includes(name)) return null;
  return propertyString([name]);
}

// ---- time, streams, routing ----

/** The host's clock as this callback began to read it: later reads in the same callback reuse it. */
export function nowNanos(): u64 {
  if (nowNanosOfThisCallback != 0) return nowNanosOfThisCallback;
  if (imports.proxy_get_current_time_nanoseconds(OUT_U64) != OK) return 0;
  nowNanosOfThisCallback = load<u64>(OUT_U64);
  return nowNanosOfThisCallback;
}

export function nowMillis(): i64 {
  return <i64>(nowNanos() / 1_000_000);
}

/** Resumes a paused request from a tick or callback: the host needs the stream made current first. */
export function resumeRequest(contextId: u32): bool {
  if (!setEffectiveContext(contextId)) return false;
  return imports.proxy_continue_stream(STREAM_REQUEST) == OK;
}

export function resumeResponse(contextId: u32): bool {
  if (!setEffectiveContext(contextId)) return false;
  return imports.proxy_continue_stream(STREAM_RESPONSE) == OK;
}

/** Makes a paused stream the current one, for work a tick does on its behalf (filter state, a local reply). */
export function setEffectiveContext(contextId: u32): bool {
  beginCallback(contextId);
  return imports.proxy_set_effective_context(contextId) == OK;
}

const CLEAR_ROUTE_CACHE = String.UTF8.encode("clear_route_cache");
const NO_ARGUMENTS = new ArrayBuffer(0);

/**
 * Makes Envoy pick the route again after a filter set a header the route table matches on. Under
 * ABI 0.2.x Envoy offers this as the foreign function "clear_route_cache" (a module importing the
 * 0.1.0 proxy_clear_route_cache fails to load). Envoy 1.40 also re-picks the route by itself when a
 * Wasm filter changes a request header; asking explicitly keeps working where it does not.
 */
export function clearRouteCache(): bool {
  if (imports.proxy_call_foreign_function(changetype<usize>(CLEAR_ROUTE_CACHE), CLEAR_ROUTE_CACHE.byteLength,
    changetype<usize>(NO_ARGUMENTS), 0, RETURNED_DATA, RETURNED_SIZE) != OK) return false;
  takeReturned();
  return true;
}

export function setTickPeriod(milliseconds: u32): void {
  imports.proxy_set_tick_period_milliseconds(milliseconds);
}

// ---- shared data ----

export class SharedValue {
  constructor(public bytes: ArrayBuffer | null, public cas: u32) {}
}

/** A process-wide shared-data entry; bytes null when the key does not exist (cas 0 then). */
export function sharedGet(key: string): SharedValue {
  const keyBytes = utf8(key);
  const result = imports.proxy_get_shared_data(changetype<usize>(keyBytes), keyBytes.byteLength,
    RETURNED_DATA, RETURNED_SIZE, OUT_U32);
  if (result != OK) return new SharedValue(null, 0);
  const cas = load<u32>(OUT_U32);
  return new SharedValue(takeReturned(), cas);
}

/** Writes an entry if its CAS still matches (0: unconditionally); false on a mismatch. */
export function sharedSet(key: string, bytes: ArrayBuffer, cas: u32): bool {
  const keyBytes = utf8(key);
  return imports.proxy_set_shared_data(changetype<usize>(keyBytes), keyBytes.byteLength, changetype<usize>(bytes), bytes.byteLength, cas) == OK;
}

// ---- metrics ----

function defineMetric(kind: u32, name: string): i32 {
  const bytes = utf8(name);
  if (imports.proxy_define_metric(kind, changetype<usize>(bytes), bytes.byteLength, OUT_U32) != OK) return -1;
  return <i32>load<u32>(OUT_U32);
}

/** Metric ids, or -1 when the host refused the name; using -1 later is a no-op. */
export function defineCounter(name: string): i32 {
  return defineMetric(METRIC_COUNTER, name);
}

export function defineGauge(name: string): i32 {
  return defineMetric(METRIC_GAUGE, name);
}

export function defineHistogram(name: string): i32 {
  return defineMetric(METRIC_HISTOGRAM, name);
}

export function incrementMetric(id: i32, delta: i64): void {
  if (id >= 0) imports.proxy_increment_metric(<u32>id, delta);
}

export function recordMetric(id: i32, value: u64): void {
  if (id >= 0) imports.proxy_record_metric(<u32>id, value);
}
