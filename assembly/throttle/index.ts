// The callbacks Envoy makes into this filter, and only those (assembly/host/abi.ts says why).
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
  proxy_on_done,
  proxy_on_log,
  proxy_on_delete,
  proxy_on_grpc_receive,
  proxy_on_grpc_close,
} from "../host/abi";
import { registerFilter, RootContext } from "../host/contexts";
import { FILTER_NAME, ThrottleRoot } from "./filter";

registerFilter((contextId: u32): RootContext => new ThrottleRoot(contextId), FILTER_NAME);
