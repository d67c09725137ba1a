// The module's proxy-wasm entry points: the SDK's, except the two that trap in the SDK when the host
// tears down the root context (it looks the root id up in the stream map, and a missing Map key
// aborts in AssemblyScript). Every filter's index.ts re-exports this file.
import { getBaseContext, getRootContext, deleteContext } from "@gcoredev/proxy-wasm-sdk-as/assembly/runtime";

export { malloc } from "@gcoredev/proxy-wasm-sdk-as/assembly/malloc";
export {
  proxy_abi_version_0_2_1,
  proxy_on_vm_start,
  proxy_validate_configuration,
  proxy_on_configure,
  proxy_on_tick,
  proxy_on_foreign_function,
  proxy_on_queue_ready,
  proxy_on_context_create,
  proxy_on_request_headers,
  proxy_on_request_body,
  proxy_on_request_trailers,
  proxy_on_request_metadata,
  proxy_on_response_headers,
  proxy_on_response_body,
  proxy_on_response_trailers,
  proxy_on_response_metadata,
  proxy_on_http_call_response,
  proxy_on_grpc_receive_initial_metadata,
  proxy_on_grpc_trailing_metadata,
  proxy_on_grpc_receive,
  proxy_on_grpc_close,
  proxy_on_downstream_data,
  proxy_on_upstream_data,
  proxy_on_upstream_connection_close,
  proxy_on_downstream_connection_close,
  proxy_on_new_connection,
  proxy_on_log,
} from "@gcoredev/proxy-wasm-sdk-as/assembly/exports";

export function proxy_on_done(context_id: u32): u32 {
  const root = getRootContext(context_id);
  if (root.context_id == context_id) return root.onDone() ? 1 : 0;
  return getBaseContext(context_id).onDone() ? 1 : 0;
}

export function proxy_on_delete(context_id: u32): void {
  const root = getRootContext(context_id);
  if (root.context_id == context_id) {
    root.onDelete();
    return;
  }
  getBaseContext(context_id).onDelete();
  deleteContext(context_id);
}
