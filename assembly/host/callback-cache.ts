// What the host answered during this callback, and the calls that read through it: headers,
// properties, the clock, and which stream the calls act on.
//
// A host call that hands data back costs Envoy 1.5–4 µs, up to a third of a 1 KB request's JSON scan
// (measured with `npm run bench -- --host-call-costs`), and a callback often asks the same map
// several times: the method, the path, the rule headers, the internal headers it strips. One
// proxy_get_header_map_pairs answers them all, and the clock and each property are read once; all
// are forgotten when the next callback begins, since other filters may change them between
// callbacks and a tick serves several streams.
import { asciiLowerCode, sameAsciiText } from "../text/ascii";
import * as imports from "./imports";
import { OK, OUT_U32, OUT_U64, REQUEST_HEADERS, RESPONSE_HEADERS, RETURNED_DATA, RETURNED_SIZE, STREAM_REQUEST, STREAM_RESPONSE, takeReturned, utf8 } from "./calls";

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

/** The stream (or root) the host calls of this callback act on: proxy-wasm's one current context. */
let currentContextId: u32 = 0;

/**
 * The stream whose request headers this module holds (it answered their callback with a stop and has
 * not let them go on), 0 for none. Filters before it have passed the headers on and filters after it
 * have not seen them yet, so only this module changes them: the snapshot stays good for that
 * stream's next callbacks (the body's, where held headers are mostly read again) and saves a
 * proxy_get_header_map_pairs each. Any other stream's callback ends it.
 */
let heldRequestHeadersOf: u32 = 0;

/**
 * The stream whose proxy_on_log was the last callback, 0 for none. Envoy ends a stream with
 * proxy_on_log and proxy_on_done back to back: the second keeps the first's clock reading.
 */
let loggedJustNow: u32 = 0;

/**
 * abi.ts calls this as every callback begins, and setEffectiveContext when a tick turns to another
 * stream; `afterLog` for proxy_on_done, which reuses the clock of the same stream's proxy_on_log
 * when that came just before it.
 */
export function beginCallback(contextId: u32, afterLog: bool = false): void {
  const keepClock = afterLog && contextId == loggedJustNow;
  loggedJustNow = 0;
  currentContextId = contextId;
  if (contextId != heldRequestHeadersOf) {
    heldRequestHeadersOf = 0;
    requestHeadersOfThisCallback.clear();
  }
  responseHeadersOfThisCallback.clear();
  if (!keepClock) nowNanosOfThisCallback = 0;
  propertiesAskedInThisCallback.length = 0;
  propertyAnswersOfThisCallback.length = 0;
}

/** abi.ts, after proxy_on_log: the stream's proxy_on_done may follow with nothing in between. */
export function logCallbackEnded(contextId: u32): void {
  loggedJustNow = contextId;
}

/** The stream (or root) the host calls of this callback act on. */
export function currentContext(): u32 {
  return currentContextId;
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

/** The response's `:status` as a number; 0 when there is none or it is not a three-digit status. */
export function responseStatus(): i32 {
  const text = responseHeader(":status");
  if (text == null || text.length != 3) return 0;
  const status = <i32>I64.parseInt(text);
  return status >= 100 && status <= 999 ? status : 0;
}

export function setResponseHeader(name: string, value: string): bool {
  return setHeader(RESPONSE_HEADERS, name, value);
}

export function removeResponseHeader(name: string): bool {
  responseHeadersOfThisCallback.load();
  return removeHeader(RESPONSE_HEADERS, name);
}

// ---- properties ----

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

// ---- time and streams ----

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

/**
 * abi.ts, after a request callback: whether the module still holds the request headers of the
 * current stream (a stop from their callback, then anything but Continue from the body's).
 */
export function requestHeadersHeld(held: bool): void {
  heldRequestHeadersOf = held ? currentContextId : 0;
}

/** Resumes a paused request from a tick or callback: the host needs the stream made current first. */
export function resumeRequest(contextId: u32): bool {
  if (!setEffectiveContext(contextId)) return false;
  if (contextId == heldRequestHeadersOf) heldRequestHeadersOf = 0;
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
