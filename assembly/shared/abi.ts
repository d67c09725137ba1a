// The module's proxy-wasm ABI 0.2.1 entry points: each finds the context Envoy names and calls it
// (context.ts holds the contexts). A filter's index.ts re-exports the ones whose callbacks it
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
  createRoot,
  createStream,
  deleteContext,
  FilterDataStatusValues,
  FilterHeadersStatusValues,
  rootContext,
  streamContext,
} from "./context";

import { collectWhenDue } from "./collector";
import { beginCallback, forgetStream } from "./host";

export { malloc } from "./host";

export function proxy_abi_version_0_2_1(): void {}

export function proxy_on_context_create(context_id: u32, parent_context_id: u32): void {
  beginCallback(context_id);
  if (parent_context_id == 0) createRoot(context_id);
  else createStream(context_id, parent_context_id);
  collectWhenDue();
}

export function proxy_on_configure(root_context_id: u32, configuration_size: u32): u32 {
  beginCallback(root_context_id);
  const root = rootContext(root_context_id);
  const accepted = root != null && root.onConfigure(configuration_size);
  if (accepted) root!.askForTicks();
  collectWhenDue();
  return accepted ? 1 : 0;
}

export function proxy_on_tick(root_context_id: u32): void {
  beginCallback(root_context_id);
  const root = rootContext(root_context_id);
  if (root != null) {
    // First, while the host's current context is still the root: the tick's work turns to streams.
    root.askForTicks();
    root.onTick();
  }
  collectWhenDue();
}

export function proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32): u32 {
  beginCallback(context_id);
  const stream = streamContext(context_id);
  if (stream == null) return FilterHeadersStatusValues.Continue;
  const status = stream.onRequestHeaders(headers, end_of_stream != 0);
  collectWhenDue();
  return status;
}

export function proxy_on_request_body(context_id: u32, body_buffer_length: u32, end_of_stream: u32): u32 {
  beginCallback(context_id);
  const stream = streamContext(context_id);
  if (stream == null) return FilterDataStatusValues.Continue;
  const status = stream.onRequestBody(body_buffer_length, end_of_stream != 0);
  collectWhenDue();
  return status;
}

export function proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: u32): u32 {
  beginCallback(context_id);
  const stream = streamContext(context_id);
  if (stream == null) return FilterHeadersStatusValues.Continue;
  const status = stream.onResponseHeaders(headers, end_of_stream != 0);
  collectWhenDue();
  return status;
}

export function proxy_on_response_body(context_id: u32, body_buffer_length: u32, end_of_stream: u32): u32 {
  beginCallback(context_id);
  const stream = streamContext(context_id);
  if (stream == null) return FilterDataStatusValues.Continue;
  const status = stream.onResponseBody(body_buffer_length, end_of_stream != 0);
  collectWhenDue();
  return status;
}

export function proxy_on_log(context_id: u32): void {
  beginCallback(context_id);
  const stream = streamContext(context_id);
  if (stream != null) stream.onLog();
  collectWhenDue();
}

export function proxy_on_done(context_id: u32): u32 {
  beginCallback(context_id);
  const stream = streamContext(context_id);
  const root = stream == null ? rootContext(context_id) : null;
  const done = stream != null ? stream.onDone() : root == null || root.onDone();
  collectWhenDue();
  return done ? 1 : 0;
}

export function proxy_on_delete(context_id: u32): void {
  beginCallback(context_id);
  deleteContext(context_id);
  forgetStream(context_id);
  collectWhenDue();
}
