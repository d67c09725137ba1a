// The module's proxy-wasm entry points, and the one place that knows how Envoy's contexts map to
// ours. Every filter's index.ts re-exports this file and calls registerFilter.
//
// Envoy runs one Wasm VM per thread for every plugin instance that shares the module, and gives each
// instance (another listener, or a new pluginConfig pushed over xDS) a root context of its own. The
// SDK keeps a single root per VM: a second configuration's on_configure would overwrite the first's
// settings for every stream (a reload from 0% to 100% and back stayed at 100%, because Envoy kept
// the draining 0% root and never configured it again), and deleting any root but the first looks its
// id up among the streams, which traps. So the SDK's root here only hands stream creation to the
// plugin root the stream belongs to; each plugin root is created, configured, ticked and deleted
// under its own id.
import { Context, RootContext, registerRootContext } from "@gcoredev/proxy-wasm-sdk-as/assembly";
import { deleteContext, ensureContext, ensureRootContext, getBaseContext } from "@gcoredev/proxy-wasm-sdk-as/assembly/runtime";

export { malloc } from "@gcoredev/proxy-wasm-sdk-as/assembly/malloc";
export {
  proxy_abi_version_0_2_1,
  proxy_on_vm_start,
  proxy_validate_configuration,
  proxy_on_foreign_function,
  proxy_on_queue_ready,
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

let pluginRootFactory: ((context_id: u32) => RootContext) | null = null;
const pluginRoots = new Map<u32, RootContext>();
/** The plugin root a stream being created belongs to; set only around the SDK's ensureContext. */
let creatingUnder: RootContext | null = null;

/** The SDK's per-VM root: it only forwards stream creation. */
class VmRoot extends RootContext {
  createContext(context_id: u32): Context {
    return creatingUnder!.createContext(context_id);
  }
}

export function registerFilter(factory: (context_id: u32) => RootContext, name: string): void {
  pluginRootFactory = factory;
  registerRootContext((context_id: u32): RootContext => new VmRoot(context_id), name);
}

export function proxy_on_context_create(context_id: u32, root_context_id: u32): void {
  if (root_context_id == 0) {
    ensureRootContext(context_id);
    if (!pluginRoots.has(context_id)) pluginRoots.set(context_id, pluginRootFactory!(context_id));
    return;
  }
  // Envoy creates streams only under roots it created first.
  if (!pluginRoots.has(root_context_id)) return;
  creatingUnder = pluginRoots.get(root_context_id);
  ensureContext(context_id, root_context_id);
  creatingUnder = null;
}

export function proxy_on_configure(root_context_id: u32, configuration_size: u32): u32 {
  if (!pluginRoots.has(root_context_id)) return 0;
  return pluginRoots.get(root_context_id).onConfigure(configuration_size) ? 1 : 0;
}

export function proxy_on_tick(root_context_id: u32): void {
  if (pluginRoots.has(root_context_id)) pluginRoots.get(root_context_id).onTick();
}

export function proxy_on_done(context_id: u32): u32 {
  if (pluginRoots.has(context_id)) return pluginRoots.get(context_id).onDone() ? 1 : 0;
  return getBaseContext(context_id).onDone() ? 1 : 0;
}

export function proxy_on_delete(context_id: u32): void {
  if (pluginRoots.has(context_id)) {
    pluginRoots.get(context_id).onDelete();
    pluginRoots.delete(context_id);
    return;
  }
  getBaseContext(context_id).onDelete();
  deleteContext(context_id);
}
