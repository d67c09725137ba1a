// The callbacks Envoy makes into this filter, and only those (assembly/host/abi.ts says why). The
// tick comes only while counter and gauge changes wait to be sent (assembly/host/metric-batch.ts).
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
} from "../host/abi";
import { registerFilter, RootContext } from "../host/contexts";
import { FILTER_NAME, MetricsRoot } from "./filter";

registerFilter((contextId: u32): RootContext => new MetricsRoot(contextId), FILTER_NAME);
