// The proxy-wasm host calls that need no memory of the callback they run in: logging, the plugin
// configuration, bodies, local responses, routing, ticks, shared data and metrics (counters and
// gauges in batches, metric-batch.ts). Everything here returns a result instead of throwing: a trap
// in a request path would fail the stream (or, under FAIL_RELOAD, reload the VM). Headers,
// properties and the clock are read through callback-cache.ts, and filter state through
// filter-state.ts; only this folder calls the imports.
import { noteHostBytes } from "./collector";
import * as imports from "./imports";
import { METRIC_FLUSH_MS, MetricBatch } from "./metric-batch";

/** proxy_log's levels, as the ABI numbers them. */
export enum LogLevelValues { trace, debug, info, warn, error, critical }

export const OK: u32 = 0;
export const REQUEST_HEADERS: u32 = 0;
export const RESPONSE_HEADERS: u32 = 2;
const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;
const GRPC_RECEIVE_BUFFER: u32 = 5;
const PLUGIN_CONFIGURATION: u32 = 7;
export const STREAM_REQUEST: u32 = 0;
export const STREAM_RESPONSE: u32 = 1;
const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;
const METRIC_HISTOGRAM: u32 = 2;

// Static out-parameters for the host to write into: calls run one at a time on a VM's thread.
export const RETURNED_DATA: usize = memory.data(4, 4);
export const RETURNED_SIZE: usize = memory.data(4, 4);
export const OUT_U32: usize = memory.data(4, 4);
export const OUT_U64: usize = memory.data(8, 8);

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
export function takeReturned(): ArrayBuffer {
  const data = load<usize>(RETURNED_DATA);
  if (data == 0) return new ArrayBuffer(0);
  // Cleared so that a call that hands nothing back and leaves the slot alone reads as empty
  // instead of unpinning this block a second time (which traps).
  store<usize>(RETURNED_DATA, 0);
  __unpin(data);
  return changetype<ArrayBuffer>(data);
}

export function utf8(text: string): ArrayBuffer {
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

/** Counts local responses sent: a stage that sent one has ended the stream (mesh/filter.ts compares counts). */
let localResponseCount: u32 = 0;

/** How many local responses this VM has sent; a change across a call means the call ended its stream. */
export function localResponsesSent(): u32 {
  return localResponseCount;
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

// ---- routing and ticks ----

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

const metricBatch = new MetricBatch();
/** A batch started since a root last asked for ticks: the root of the callback must ask now (abi.ts). */
let metricBatchStarted = false;

/**
 * Adds `delta` to a counter or gauge. It reaches Envoy with the VM's next batch: from a root's tick
 * at most METRIC_FLUSH_MS later, or as a root is deleted.
 */
export function incrementMetric(id: i32, delta: i64): void {
  if (id >= 0 && metricBatch.add(<u32>id, delta)) metricBatchStarted = true;
}

/** Whether counter or gauge changes wait for their batch to be sent. */
export function metricsHeld(): bool {
  return !metricBatch.empty;
}

/** Whether a callback started a batch that no root ticks for yet. */
export function metricBatchWaiting(): bool {
  return metricBatchStarted;
}

/**
 * For a root asking for ticks: the period the held changes need, METRIC_FLUSH_MS while any are held
 * (else 0). The root that asks then ticks for the batch, so no other needs to be told.
 */
export function metricTicksNeeded(): u32 {
  metricBatchStarted = false;
  return metricBatch.empty ? 0 : METRIC_FLUSH_MS;
}

function sendIncrement(id: u32, delta: i64): void {
  imports.proxy_increment_metric(id, delta);
}

/** From a root's tick: hands the held changes to Envoy when their period has passed. */
export function flushMetricsWhenDue(now: i64): void {
  if (metricBatch.due(now)) metricBatch.flush(sendIncrement, now);
}

/**
 * As a root is deleted (a reload, or the VM shutting down): hands every held change to Envoy now,
 * so that none is lost with the root that would have ticked for it. The next batch is due at the
 * next tick of any root (time 0 started its period).
 */
export function flushMetrics(): void {
  if (!metricBatch.empty) metricBatch.flush(sendIncrement, 0);
}

/** Histograms take every value as it comes: the ABI has no call for several at once. */
export function recordMetric(id: i32, value: u64): void {
  if (id >= 0) imports.proxy_record_metric(<u32>id, value);
}

// ---- gRPC calls ----

/**
 * Starts a unary gRPC call: the token Envoy names it by in proxy_on_grpc_receive/_close, or the
 * host's refusal as a negative WasmResult (-10 InternalFailure when the cluster does not exist).
 * Contexts call it through HostContext.grpcCall, which routes the answer back to them.
 * `service` is a serialized envoy.config.core.v3.GrpcService (Envoy also takes a bare cluster name,
 * but a name that happens to parse as that message would be misread); `serviceName` and `method`
 * make the path /<serviceName>/<method>; `message` is the serialized request. After `timeoutMs`
 * Envoy closes the call with status 14 and "upstream request timeout".
 */
export function grpcCall(service: ArrayBuffer, serviceName: ArrayBuffer, method: ArrayBuffer, message: Uint8Array, timeoutMs: u32): i64 {
  const result = imports.proxy_grpc_call(changetype<usize>(service), service.byteLength,
    changetype<usize>(serviceName), serviceName.byteLength, changetype<usize>(method), method.byteLength,
    0, 0, changetype<usize>(message.buffer) + message.byteOffset, message.byteLength, timeoutMs, OUT_U32);
  if (result != OK) return -<i64>result;
  return <i64>load<u32>(OUT_U32);
}

/** The answer of the call whose onGrpcReceive runs now: its serialized message, `size` bytes. */
export function grpcReceived(size: u32): Uint8Array {
  return bufferBytes(GRPC_RECEIVE_BUFFER, 0, size);
}

/** The message of the gRPC status the call whose onGrpcClose runs now ended with; "" when there is none. */
export function grpcStatusMessage(): string {
  if (imports.proxy_get_status(OUT_U32, RETURNED_DATA, RETURNED_SIZE) != OK) return "";
  return String.UTF8.decode(takeReturned());
}
