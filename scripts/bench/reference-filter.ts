// A reference Wasm filter for the benchmark only (AssemblyScript; scripts/bench.ts compiles it into
// its scratch directory): it measures what any filter on llm-mesh's proxy-wasm layer
// (assembly/shared/context.ts, abi.ts, host.ts) pays before doing any work, so the report can split
// an llm-mesh filter's cost into Envoy's Wasm plumbing and the filter's own code.
// Configuration "pass": every callback returns Continue at once (contexts, callbacks, no host call).
// Configuration "read-body": holds the request headers, buffers the body and copies it into the VM,
// as admission does, then continues without looking at it.
// It exports every callback abi.ts has, as reference-raw.wat does, so that Envoy makes the same calls
// into both and the difference between wasm-raw and wasm-pass is the layer's own cost.
export * from "../../assembly/shared/abi";
import { Context, FilterDataStatusValues, FilterHeadersStatusValues, registerFilter, RootContext } from "../../assembly/shared/context";
import { pluginConfiguration, requestBody } from "../../assembly/shared/host";

class ReferenceRoot extends RootContext {
  readBody: bool = false;

  onConfigure(configuration_size: u32): bool {
    this.readBody = pluginConfiguration(configuration_size) == "read-body";
    return true;
  }

  createContext(context_id: u32): Context {
    return new ReferenceStream(context_id, this);
  }
}

class ReferenceStream extends Context {
  constructor(context_id: u32, private root: ReferenceRoot) {
    super(context_id, root);
  }

  onRequestHeaders(_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    return this.root.readBody && !end_of_stream ? FilterHeadersStatusValues.StopIteration : FilterHeadersStatusValues.Continue;
  }

  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!this.root.readBody) return FilterDataStatusValues.Continue;
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    // Copied in and dropped: the cost measured is Envoy buffering and handing the body over.
    requestBody(0, <u32>body_buffer_length);
    return FilterDataStatusValues.Continue;
  }
}

registerFilter((context_id: u32): RootContext => new ReferenceRoot(context_id), "llm-reference");
