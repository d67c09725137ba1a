// Every callback: the mesh's stages between them handle all of them (assembly/shared/abi.ts).
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
} from "../shared/abi";
import { registerFilter, RootContext } from "../shared/context";
import { keepFilterStateInVm } from "../shared/host";
import { FACT_ROUTER_MODELS } from "../shared/models-api";
import { FACT_ALL } from "../shared/request-facts";
import { FACT_USAGE, FACT_USAGE_TRACKED } from "../shared/usage-handoff";
import { FILTER_NAME, MeshRoot } from "./filter";

registerFilter((context_id: u32): RootContext => new MeshRoot(context_id), FILTER_NAME);
// What the stages hand each other and nothing else reads: no host call to store it.
keepFilterStateInVm([FACT_ALL, FACT_USAGE_TRACKED, FACT_USAGE, FACT_ROUTER_MODELS]);
