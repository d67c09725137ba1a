// Every callback: the mesh's stages between them handle all of them (assembly/host/abi.ts).
export {
  malloc,
  proxy_abi_version_0_2_1,
  proxy_on_context_create,
  proxy_on_configure,
  proxy_on_tick,
  proxy_on_request_headers,
  proxy_on_request_body,
  proxy_on_response_headers,
  proxy_on_response_body,
  proxy_on_log,
  proxy_on_done,
  proxy_on_delete,
  proxy_on_grpc_receive,
  proxy_on_grpc_close,
} from "../host/abi";
import { registerFilter, RootContext } from "../host/contexts";
import { keepFilterStateInVm, readFilterStateInVm } from "../host/filter-state";
import { FACT_ADMISSION, FACT_ALL, FACT_ROUTE, FACT_ROUTER_MODELS, FACT_THROTTLE, FACT_USAGE, FACT_USAGE_TRACKED } from "../llm/filter-state-names";
import { FILTER_NAME, MeshRoot } from "./filter";

registerFilter((contextId: u32): RootContext => new MeshRoot(contextId), FILTER_NAME);
// What the stages hand each other and nothing else reads: no host call to store it.
keepFilterStateInVm([FACT_ALL, FACT_USAGE_TRACKED, FACT_USAGE, FACT_ROUTER_MODELS]);
// What the stages read of each other's decisions, left for access logs too: the module runs instead
// of the separate filters (docs/one-module.md), so one its stages did not set was set by nobody, and
// asking Envoy (a property read, the dearest host call) would only confirm it.
readFilterStateInVm([FACT_ADMISSION, FACT_THROTTLE, FACT_ROUTE]);
