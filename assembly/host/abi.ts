// The module's proxy-wasm ABI 0.2.1 entry points: each finds the context Envoy names and calls it
// (contexts.ts holds the contexts). A filter's index.ts re-exports the ones whose callbacks it
// handles, and only those: Envoy skips a callback the module does not export, which saves a call
// into the VM per stream and callback, so a filter that never looks at the response should not
// export the response callbacks. Envoy 1.40 (proxy-wasm-cpp-host) refuses a module only without
// `malloc` (or `proxy_on_memory_allocate`), without an ABI version export, or with an import it
// does not offer; every callback is optional, and a missing one acts as "continue" (or "done").
// test/build.test.ts checks that each callback a filter overrides is exported.
//
// An id Envoy never created here (there is none in practice) gets the answer of a missing export
// rather than a trap: a trap fails the stream, or the whole VM.
import {
  askForMetricTicks,
  createRoot,
  createStream,
  deleteContext,
  FilterDataStatusValues,
  FilterHeadersStatusValues,
  rootContext,
  streamContext,
  takeGrpcCaller,
} from "./contexts";

import { collectWhenDue } from "./collector";
import { flushMetricsWhenDue, metricsHeld } from "./calls";
import { beginCallback, logCallbackEnded, nowMillis, requestHeadersHeld } from "./callback-cache";
import { forgetStream } from "./filter-state";

export { malloc } from "./calls";

/**
 * What a callback that ran a filter's hooks ends with: a root asks for the ticks that send a metric
 * batch the hooks started, and the collector runs when its budget is spent.
 */
function endCallback(contextId: u32): void {
  askForMetricTicks(contextId);
  collectWhenDue();
}

export function proxy_abi_version_0_2_1(): void {}

export function proxy_on_context_create(contextId: u32, parentContextId: u32): void {
  beginCallback(contextId);
  if (parentContextId == 0) createRoot(contextId);
  else createStream(contextId, parentContextId);
  collectWhenDue();
}

export function proxy_on_configure(rootContextId: u32, configurationSize: u32): u32 {
  beginCallback(rootContextId);
  const root = rootContext(rootContextId);
  const accepted = root != null && root.onConfigure(configurationSize);
  if (accepted) root!.askForTicks();
  collectWhenDue();
  return accepted ? 1 : 0;
}

export function proxy_on_tick(rootContextId: u32): void {
  beginCallback(rootContextId);
  const root = rootContext(rootContextId);
  if (root != null) {
    // The VM's held metric changes go before the root asks again, so that ticks kept only for
    // them stop at the tick that sent the last (calls.ts, metric-batch.ts).
    if (metricsHeld()) flushMetricsWhenDue(nowMillis());
    // First, while the host's current context is still the root: the tick's work turns to streams.
    root.askForTicks();
    root.onTick();
  }
  endCallback(rootContextId);
}

export function proxy_on_request_headers(contextId: u32, headers: u32, endOfStream: u32): u32 {
  beginCallback(contextId);
  const stream = streamContext(contextId);
  if (stream == null) return FilterHeadersStatusValues.Continue;
  const status = stream.onRequestHeaders(headers, endOfStream != 0);
  requestHeadersHeld(status != FilterHeadersStatusValues.Continue);
  endCallback(contextId);
  return status;
}

export function proxy_on_request_body(contextId: u32, bodyBufferLength: u32, endOfStream: u32): u32 {
  beginCallback(contextId);
  const stream = streamContext(contextId);
  if (stream == null) return FilterDataStatusValues.Continue;
  const status = stream.onRequestBody(bodyBufferLength, endOfStream != 0);
  if (status == FilterDataStatusValues.Continue) requestHeadersHeld(false);
  endCallback(contextId);
  return status;
}

export function proxy_on_response_headers(contextId: u32, headers: u32, endOfStream: u32): u32 {
  beginCallback(contextId);
  const stream = streamContext(contextId);
  if (stream == null) return FilterHeadersStatusValues.Continue;
  const status = stream.onResponseHeaders(headers, endOfStream != 0);
  endCallback(contextId);
  return status;
}

export function proxy_on_response_body(contextId: u32, bodyBufferLength: u32, endOfStream: u32): u32 {
  beginCallback(contextId);
  const stream = streamContext(contextId);
  if (stream == null) return FilterDataStatusValues.Continue;
  const status = stream.onResponseBody(bodyBufferLength, endOfStream != 0);
  endCallback(contextId);
  return status;
}

export function proxy_on_log(contextId: u32): void {
  beginCallback(contextId);
  const stream = streamContext(contextId);
  if (stream != null) stream.onLog();
  endCallback(contextId);
  logCallbackEnded(contextId);
}

export function proxy_on_done(contextId: u32): u32 {
  beginCallback(contextId, true);
  const stream = streamContext(contextId);
  const root = stream == null ? rootContext(contextId) : null;
  const done = stream != null ? stream.onDone() : root == null || root.onDone();
  endCallback(contextId);
  return done ? 1 : 0;
}

export function proxy_on_delete(contextId: u32): void {
  beginCallback(contextId);
  deleteContext(contextId);
  forgetStream(contextId);
  collectWhenDue();
}

// Answers to unary gRPC calls: exactly one of these two per call, on the root context whichever
// context made the call (takeGrpcCaller finds that one). Envoy 1.40 makes no metadata callbacks
// (proxy_on_grpc_receive_initial_metadata, _trailing_metadata) for unary calls, only for gRPC
// streams, which llm-mesh does not open; so those are not exported.

export function proxy_on_grpc_receive(contextId: u32, token: u32, messageSize: u32): void {
  beginCallback(contextId);
  const caller = takeGrpcCaller(token);
  if (caller != null) caller.onGrpcReceive(token, messageSize);
  endCallback(contextId);
}

export function proxy_on_grpc_close(contextId: u32, token: u32, status: u32): void {
  beginCallback(contextId);
  const caller = takeGrpcCaller(token);
  if (caller != null) caller.onGrpcClose(token, status);
  endCallback(contextId);
}
