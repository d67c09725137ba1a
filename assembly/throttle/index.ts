export * from "../shared/abi";
import { RootContext } from "@gcoredev/proxy-wasm-sdk-as/assembly";
import { registerFilter } from "../shared/abi";
import { FILTER_NAME, ThrottleRoot } from "./filter";

registerFilter((context_id: u32): RootContext => new ThrottleRoot(context_id), FILTER_NAME);
