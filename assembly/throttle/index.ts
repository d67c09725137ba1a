export * from "../shared/abi";
import { registerRootContext, RootContext } from "@gcoredev/proxy-wasm-sdk-as/assembly";
import { FILTER_NAME, ThrottleRoot } from "./filter";

registerRootContext((context_id: u32): RootContext => new ThrottleRoot(context_id), FILTER_NAME);
