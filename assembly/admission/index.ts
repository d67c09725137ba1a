export * from "../shared/abi";
import { registerRootContext, RootContext } from "@gcoredev/proxy-wasm-sdk-as/assembly";
import { AdmissionRoot, FILTER_NAME } from "./filter";

registerRootContext((context_id: u32): RootContext => new AdmissionRoot(context_id), FILTER_NAME);
