export * from "../shared/abi";
import { RootContext } from "@gcoredev/proxy-wasm-sdk-as/assembly";
import { registerFilter } from "../shared/abi";
import { FILTER_NAME, MetricsRoot } from "./filter";

registerFilter((context_id: u32): RootContext => new MetricsRoot(context_id), FILTER_NAME);
