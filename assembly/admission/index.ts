// The callbacks Envoy makes into this filter, and only those (assembly/host/abi.ts says why):
// admission reads the response only to answer the model list (models-list-stream.ts), and has
// nothing to finish when a stream is done. The tick comes only while held requests are watched
// (hold-rules.ts) or counter changes wait to be sent (assembly/host/metric-batch.ts).
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
  proxy_on_delete,
} from "../host/abi";
import { registerFilter, RootContext } from "../host/contexts";
import { FILTER_NAME, AdmissionRoot } from "./filter";

registerFilter((contextId: u32): RootContext => new AdmissionRoot(contextId), FILTER_NAME);
