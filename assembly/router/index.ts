export * from "../shared/abi";
import { RootContext } from "@gcoredev/proxy-wasm-sdk-as/assembly";
import { registerFilter } from "../shared/abi";
import { FILTER_NAME, RouterRoot } from "./filter";

registerFilter((context_id: u32): RootContext => new RouterRoot(context_id), FILTER_NAME);
