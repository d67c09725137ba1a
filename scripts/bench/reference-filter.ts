// A reference Wasm filter for the benchmark only (AssemblyScript; scripts/bench.ts compiles it into
// its scratch directory): it measures what any filter on llm-mesh's proxy-wasm layer
// (assembly/shared/context.ts, abi.ts, host.ts) pays before doing any work, so the report can split
// an llm-mesh filter's cost into Envoy's Wasm plumbing and the filter's own code.
// Configuration "pass": every callback returns Continue at once (contexts, callbacks, no host call).
// Configuration "read-body": holds the request headers, buffers the body and copies it into the VM,
// as admission does, then continues without looking at it.
// Configuration "calls:<kind>:<n>" (`npm run bench -- --host-call-costs`): makes one kind of host call
// n times on the request headers, so that (its CPU per request − wasm-pass's) / n is what Envoy
// charges for that call.
// It exports every callback abi.ts has, as reference-raw.wat does, so that Envoy makes the same calls
// into both and the difference between wasm-raw and wasm-pass is the layer's own cost.
export * from "../../assembly/shared/abi";
import { Context, FilterDataStatusValues, FilterHeadersStatusValues, registerFilter, RootContext } from "../../assembly/shared/context";
import {
  defineCounter, defineHistogram, filterState, incrementMetric, nowNanos, pluginConfiguration, propertyInt, recordMetric,
  removeRequestHeader, requestBody, requestHeader, setFilterState, setRequestHeader, sharedGet, sharedSet,
} from "../../assembly/shared/host";

const SHARED_KEY = "llm-reference:probe";
const SHARED_VALUE = new ArrayBuffer(220);

class ReferenceRoot extends RootContext {
  readBody: bool = false;
  callKind: string = "";
  callCount: i32 = 0;
  counter: i32 = -1;
  histogram: i32 = -1;

  onConfigure(configuration_size: u32): bool {
    const config = pluginConfiguration(configuration_size);
    this.readBody = config == "read-body";
    if (config.startsWith("calls:")) {
      const parts = config.split(":");
      this.callKind = parts[1];
      this.callCount = I32.parseInt(parts[2]);
      this.counter = defineCounter("llm_reference_probe_total");
      this.histogram = defineHistogram("llm_reference_probe");
      sharedSet(SHARED_KEY, SHARED_VALUE, 0);
    }
    return true;
  }

  createContext(context_id: u32): Context {
    return new ReferenceStream(context_id, this);
  }
}

/** The host calls a "calls:" configuration can repeat; each name is a row of the report. */
function makeCalls(root: ReferenceRoot): void {
  const kind = root.callKind;
  const n = root.callCount;
  if (kind == "state-get") setFilterState("llm_reference.probe", "value");
  for (let i = 0; i < n; i++) {
    if (kind == "header-get") requestHeader(":path");
    else if (kind == "header-get-absent") requestHeader("x-llm-reference-absent");
    else if (kind == "header-set") setRequestHeader("x-llm-reference-probe", "value");
    else if (kind == "header-remove") removeRequestHeader("x-llm-reference-absent");
    else if (kind == "state-set") setFilterState("llm_reference.probe", "value");
    else if (kind == "state-get") filterState("llm_reference.probe");
    else if (kind == "property-get") propertyInt(["request", "time"]);
    else if (kind == "shared-get") sharedGet(SHARED_KEY);
    else if (kind == "shared-set") sharedSet(SHARED_KEY, SHARED_VALUE, 0);
    else if (kind == "metric-increment") incrementMetric(root.counter, 1);
    else if (kind == "metric-record") recordMetric(root.histogram, 5);
    else if (kind == "time") nowNanos();
  }
}

class ReferenceStream extends Context {
  constructor(context_id: u32, private root: ReferenceRoot) {
    super(context_id, root);
  }

  onRequestHeaders(_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (this.root.callCount > 0) makeCalls(this.root);
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
