// The callbacks Envoy makes into this filter, and only those (assembly/shared/abi.ts says why).
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
  proxy_on_delete,
} from "../shared/abi";
import { registerFilter, RootContext } from "../shared/context";
import { FILTER_NAME, RouterRoot } from "./filter";

registerFilter((context_id: u32): RootContext => new RouterRoot(context_id), FILTER_NAME);
