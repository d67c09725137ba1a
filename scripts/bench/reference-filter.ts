// A reference Wasm filter for the benchmark only (AssemblyScript; scripts/bench.ts compiles it into
// its scratch directory): it measures what any filter on llm-mesh's proxy-wasm layer
// (assembly/host/contexts.ts, abi.ts, host.ts) pays before doing any work, so the report can split
// an llm-mesh filter's cost into Envoy's Wasm plumbing and the filter's own code.
// Configuration "pass": every callback returns Continue at once (contexts, callbacks, no host call).
// Configuration "read-body": holds the request headers, buffers the body and copies it into the VM,
// as admission does, then continues without looking at it.
// Configuration "calls:<kind>:<n>" (`npm run bench -- --host-call-costs`): makes one kind of host call
// n times on the request headers, so that (its CPU per request − wasm-pass's) / n is what Envoy
// charges for that call.
// It exports every callback abi.ts has, as reference-raw.wat does, so that Envoy makes the same calls
// into both and the difference between wasm-raw and wasm-pass is the layer's own cost.
export * from "../../assembly/host/abi";
import { StreamContext, FilterDataStatusValues, FilterHeadersStatusValues, registerFilter, RootContext } from "../../assembly/host/contexts";
import { defineCounter, defineHistogram, pluginConfiguration, requestBody, ResponseHeaders } from "../../assembly/host/calls";
import * as imports from "../../assembly/host/imports";

// The calls go to the host functions directly, not through host.ts, whose per-callback caches would
// answer most repeats without asking Envoy: the figure wanted is Envoy's own price of each call.
const OUT_DATA: usize = memory.data(4, 4);
const OUT_SIZE: usize = memory.data(4, 4);
const OUT_CAS: usize = memory.data(4, 4);
const OUT_TIME: usize = memory.data(8, 8);
const PATH_HEADER = String.UTF8.encode(":path");
const ABSENT_HEADER = String.UTF8.encode("x-llm-reference-absent");
const PROBE_HEADER = String.UTF8.encode("x-llm-reference-probe");
const PROBE_VALUE = String.UTF8.encode("value");
const STATE_NAME = String.UTF8.encode("llm_reference.probe");
const REQUEST_TIME = String.UTF8.encode("request\0time");
const SHARED_KEY = String.UTF8.encode("llm-reference:probe");
const SHARED_VALUE = new ArrayBuffer(220);
const NO_PAIRS = new ArrayBuffer(0);

class ReferenceRoot extends RootContext {
  readBody: bool = false;
  callKind: string = "";
  callCount: i32 = 0;
  counter: i32 = -1;
  histogram: i32 = -1;

  onConfigure(configurationSize: u32): bool {
    const config = pluginConfiguration(configurationSize);
    this.readBody = config == "read-body";
    if (config.startsWith("calls:")) {
      const parts = config.split(":");
      this.callKind = parts[1];
      this.callCount = I32.parseInt(parts[2]);
      this.counter = defineCounter("llm_reference_probe_total");
      this.histogram = defineHistogram("llm_reference_probe");
      setShared();
    }
    return true;
  }

  createContext(contextId: u32): StreamContext {
    return new ReferenceStream(contextId, this);
  }
}

const ptr = (bytes: ArrayBuffer): usize => changetype<usize>(bytes);

/** Frees what the host handed back: the module's malloc pinned it (assembly/host/calls.ts). */
function dropReturned(): void {
  const data = load<usize>(OUT_DATA);
  if (data == 0) return;
  store<usize>(OUT_DATA, 0);
  __unpin(data);
}

/**
 * The request's headers plus six probe headers, serialized as proxy_set_header_map_pairs takes
 * them (the layout ResponseHeaders writes for local responses): what one call that writes a
 * callback's headers at once would hand Envoy.
 */
function headersWithProbes(): ArrayBuffer {
  const headers = new ResponseHeaders();
  if (imports.proxy_get_header_map_pairs(0, OUT_DATA, OUT_SIZE) == 0) {
    const data = load<usize>(OUT_DATA);
    const count = load<u32>(data);
    let at = data + 4 + count * 8;
    for (let i: u32 = 0; i < count; i++) {
      const nameSize = load<u32>(data + 4 + i * 8);
      const valueSize = load<u32>(data + 8 + i * 8);
      headers.add(String.UTF8.decodeUnsafe(at, nameSize), String.UTF8.decodeUnsafe(at + nameSize + 1, valueSize));
      at += nameSize + valueSize + 2;
    }
    dropReturned();
  }
  for (let i = 0; i < 6; i++) headers.add("x-llm-reference-probe-" + i.toString(), "value");
  return headers.serialize();
}

function setShared(): void {
  imports.proxy_set_shared_data(ptr(SHARED_KEY), SHARED_KEY.byteLength, ptr(SHARED_VALUE), SHARED_VALUE.byteLength, 0);
}

function setState(): void {
  imports.proxy_set_property(ptr(STATE_NAME), STATE_NAME.byteLength, ptr(PROBE_VALUE), PROBE_VALUE.byteLength);
}

/** The host calls a "calls:" configuration can repeat; each name is a row of the report. */
function makeCalls(root: ReferenceRoot): void {
  const kind = root.callKind;
  const n = root.callCount;
  if (kind == "state-get") setState();
  const pairs = kind == "header-set-pairs" ? headersWithProbes() : NO_PAIRS;
  for (let i = 0; i < n; i++) {
    if (kind == "header-get") {
      if (imports.proxy_get_header_map_value(0, ptr(PATH_HEADER), PATH_HEADER.byteLength, OUT_DATA, OUT_SIZE) == 0) dropReturned();
    } else if (kind == "header-get-absent") imports.proxy_get_header_map_value(0, ptr(ABSENT_HEADER), ABSENT_HEADER.byteLength, OUT_DATA, OUT_SIZE);
    else if (kind == "header-pairs") {
      if (imports.proxy_get_header_map_pairs(0, OUT_DATA, OUT_SIZE) == 0) dropReturned();
    } else if (kind == "header-set") imports.proxy_replace_header_map_value(0, ptr(PROBE_HEADER), PROBE_HEADER.byteLength, ptr(PROBE_VALUE), PROBE_VALUE.byteLength);
    else if (kind == "header-set-pairs") imports.proxy_set_header_map_pairs(0, ptr(pairs), pairs.byteLength);
    else if (kind == "header-remove") imports.proxy_remove_header_map_value(0, ptr(ABSENT_HEADER), ABSENT_HEADER.byteLength);
    else if (kind == "state-set") setState();
    else if (kind == "state-get") {
      if (imports.proxy_get_property(ptr(STATE_NAME), STATE_NAME.byteLength, OUT_DATA, OUT_SIZE) == 0) dropReturned();
    } else if (kind == "property-get") {
      if (imports.proxy_get_property(ptr(REQUEST_TIME), REQUEST_TIME.byteLength, OUT_DATA, OUT_SIZE) == 0) dropReturned();
    } else if (kind == "shared-get") {
      if (imports.proxy_get_shared_data(ptr(SHARED_KEY), SHARED_KEY.byteLength, OUT_DATA, OUT_SIZE, OUT_CAS) == 0) dropReturned();
    } else if (kind == "shared-set") setShared();
    else if (kind == "metric-increment") imports.proxy_increment_metric(<u32>root.counter, 1);
    else if (kind == "metric-record") imports.proxy_record_metric(<u32>root.histogram, 5);
    else if (kind == "time") imports.proxy_get_current_time_nanoseconds(OUT_TIME);
  }
}

class ReferenceStream extends StreamContext {
  constructor(contextId: u32, private root: ReferenceRoot) {
    super(contextId, root);
  }

  onRequestHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    if (this.root.callCount > 0) makeCalls(this.root);
    return this.root.readBody && !endOfStream ? FilterHeadersStatusValues.StopIteration : FilterHeadersStatusValues.Continue;
  }

  onRequestBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    if (!this.root.readBody) return FilterDataStatusValues.Continue;
    if (!endOfStream) return FilterDataStatusValues.StopIterationAndBuffer;
    // Copied in and dropped: the cost measured is Envoy buffering and handing the body over.
    requestBody(0, <u32>bodyBufferLength);
    return FilterDataStatusValues.Continue;
  }
}

registerFilter((contextId: u32): RootContext => new ReferenceRoot(contextId), "llm-reference");
