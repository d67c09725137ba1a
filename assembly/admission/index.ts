export * from "../shared/abi";
import { RootContext } from "@gcoredev/proxy-wasm-sdk-as/assembly";
import { registerFilter } from "../shared/abi";
import { FILTER_NAME, AdmissionRoot } from "./filter";

registerFilter((context_id: u32): RootContext => new AdmissionRoot(context_id), FILTER_NAME);
