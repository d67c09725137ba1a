// `tsx scripts/bench/module-profile.ts [--scenario mesh|mesh-lean] [--workload 1k|16k|128k] [--ms N]`:
// where the one module's own code spends a request, function by function. Inside Envoy that split
// is out of reach (Envoy's binary is stripped and V8 writes no symbol map there; `perf` sees one
// block of generated code), so this runs build/mesh.wasm, built again with its names kept, in
// Node's V8 (the engine Envoy embeds) and drives it through the callbacks Envoy makes for one
// request, answering its host calls from fixed data: the benchmark's request and answer, the
// headers wrk and Envoy send, status 200. It measures the module's code only: what the host side of
// each call costs is Envoy's, measured by `npm run bench` (`--host-call-costs`) in the real Envoy.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { repoDir } from "../../tooling/envoy-bin.ts";
import { jsonAnswer, workloads } from "./bodies.ts";
import { timeCalls } from "./kernels.ts";
import { namedReleaseBuild } from "./named-build.ts";
import { discoverFilters } from "./scenarios.ts";
import { sampleWasm } from "./wasm-samples.ts";

const OK = 0;
const NOT_FOUND = 1;
const CAS_MISMATCH = 8;
const PLUGIN_CONFIGURATION = 7;
const REQUEST_HEADERS = 0;
const REQUEST_BODY = 0;

type Headers = [string, string][];

interface Stream {
  request: Headers;
  response: Headers;
  requestBody: Uint8Array;
  responseBody: Uint8Array;
  /** What the module set with proxy_set_property: filter state, which lives as long as the stream. */
  filterState: Map<string, Uint8Array>;
  /** A header map as proxy_get_header_map_pairs hands it over, kept until the map changes. */
  requestPairs?: Uint8Array;
  responsePairs?: Uint8Array;
}

/** Serializes header pairs as the proxy-wasm ABI does: count, (name size, value size) pairs, NUL-ended bytes. */
function headerPairs(headers: Headers): Uint8Array {
  const encoder = new TextEncoder();
  const encoded = headers.map(([name, value]) => [encoder.encode(name), encoder.encode(value)]);
  const size = encoded.reduce((sum, [name, value]) => sum + name.length + value.length + 2, 4 + 8 * headers.length);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, headers.length, true);
  let at = 4 + 8 * headers.length;
  encoded.forEach(([name, value], i) => {
    view.setUint32(4 + 8 * i, name.length, true);
    view.setUint32(8 + 8 * i, value.length, true);
    out.set(name, at);
    at += name.length + 1;
    out.set(value, at);
    at += value.length + 1;
  });
  return out;
}

const int64 = (value: bigint) => {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigInt64(0, value, true);
  return bytes;
};

export interface ModuleDriver {
  /** One request through every callback Envoy makes for it, in Envoy's order. */
  request(): void;
  /** Host calls the module made since the last reset, by ABI name. */
  hostCalls: Map<string, number>;
}

/** Instantiates a module, configures it as Envoy would and returns a driver for requests. */
export async function driveModule(wasm: BufferSource, configuration: string, requestBody: string, answer: string): Promise<ModuleDriver> {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const hostCalls = new Map<string, number>();
  const streams = new Map<number, Stream>();
  const sharedData = new Map<string, { value: Uint8Array; cas: number }>();
  let nextCas = 1;
  let nextMetric = 0;
  let current = 0;
  let exports: { memory: WebAssembly.Memory; malloc(size: number): number } & Record<string, (...args: number[]) => number>;

  const bytes = () => new Uint8Array(exports.memory.buffer);
  const view = () => new DataView(exports.memory.buffer);
  const text = (at: number, size: number) => decoder.decode(bytes().subarray(at, at + size));
  /** Hands bytes to the module as Envoy does: through the module's malloc, address and size in the out-parameters. */
  const handOver = (data: Uint8Array, dataOut: number, sizeOut: number) => {
    const at = data.length === 0 ? 0 : exports.malloc(data.length) >>> 0;
    if (at) bytes().set(data, at);
    view().setUint32(dataOut, at, true);
    view().setUint32(sizeOut, data.length, true);
  };
  const counted = <T extends (...args: number[]) => number>(name: string, answer: T) =>
    ((...args: number[]) => {
      hostCalls.set(name, (hostCalls.get(name) ?? 0) + 1);
      return answer(...args);
    }) as T;
  const stream = () => streams.get(current)!;
  /** A header map the module is about to change: its serialized form is stale after. */
  const changing = (map: number) => {
    const s = stream();
    if (map === REQUEST_HEADERS) {
      s.requestPairs = undefined;
      return s.request;
    }
    s.responsePairs = undefined;
    return s.response;
  };
  const configBytes = encoder.encode(configuration);
  const properties = new Map<string, () => Uint8Array>([
    ["response\0code", () => int64(200n)],
    ["response\0code_details", () => encoder.encode("via_upstream")],
    ["request\0time", () => int64(BigInt(Date.now()) * 1_000_000n)],
  ]);

  const env = {
    proxy_log: counted("proxy_log", () => OK),
    proxy_get_log_level: (out: number) => (view().setUint32(out, 2, true), OK),
    proxy_get_buffer_bytes: counted("proxy_get_buffer_bytes", (buffer, start, length, dataOut, sizeOut) => {
      const source = buffer === PLUGIN_CONFIGURATION ? configBytes : buffer === REQUEST_BODY ? stream().requestBody : stream().responseBody;
      handOver(source.subarray(start, start + length), dataOut, sizeOut);
      return OK;
    }),
    proxy_set_buffer_bytes: counted("proxy_set_buffer_bytes", () => OK),
    proxy_get_header_map_value: counted("proxy_get_header_map_value", (map, key, keySize, dataOut, sizeOut) => {
      const name = text(key, keySize);
      const found = (map === REQUEST_HEADERS ? stream().request : stream().response).find(([n]) => n === name);
      if (!found) return NOT_FOUND;
      handOver(encoder.encode(found[1]), dataOut, sizeOut);
      return OK;
    }),
    proxy_get_header_map_pairs: counted("proxy_get_header_map_pairs", (map, dataOut, sizeOut) => {
      const s = stream();
      const pairs = map === REQUEST_HEADERS ? (s.requestPairs ??= headerPairs(s.request)) : (s.responsePairs ??= headerPairs(s.response));
      handOver(pairs, dataOut, sizeOut);
      return OK;
    }),
    // Envoy's HeaderMap::byteSize(): names and values, no separators. The filters read it only on a
    // held request whose body is late, which the driven requests never are.
    proxy_get_header_map_size: counted("proxy_get_header_map_size", (map, sizeOut) => {
      const headers = map === REQUEST_HEADERS ? stream().request : stream().response;
      view().setUint32(sizeOut, headers.reduce((sum, [name, value]) => sum + encoder.encode(name).length + encoder.encode(value).length, 0), true);
      return OK;
    }),
    proxy_replace_header_map_value: counted("proxy_replace_header_map_value", (map, key, keySize, value, valueSize) => {
      const headers = changing(map);
      const name = text(key, keySize);
      const at = headers.findIndex(([n]) => n === name);
      if (at >= 0) headers.splice(at, 1);
      headers.push([name, text(value, valueSize)]);
      return OK;
    }),
    proxy_remove_header_map_value: counted("proxy_remove_header_map_value", (map, key, keySize) => {
      const headers = changing(map);
      const at = headers.findIndex(([n]) => n === text(key, keySize));
      if (at >= 0) headers.splice(at, 1);
      return OK;
    }),
    proxy_send_local_response: counted("proxy_send_local_response", () => {
      throw new Error("the module answered a benchmark request itself: its configuration does not admit the benchmark traffic");
    }),
    proxy_get_property: counted("proxy_get_property", (path, pathSize, dataOut, sizeOut) => {
      const name = text(path, pathSize);
      const value = properties.get(name)?.() ?? stream().filterState.get(name);
      if (!value) return NOT_FOUND;
      handOver(value, dataOut, sizeOut);
      return OK;
    }),
    proxy_set_property: counted("proxy_set_property", (path, pathSize, value, valueSize) => {
      stream().filterState.set(text(path, pathSize), bytes().slice(value, value + valueSize));
      return OK;
    }),
    proxy_get_current_time_nanoseconds: counted("proxy_get_current_time_nanoseconds", (out) => {
      view().setBigUint64(out, BigInt(Date.now()) * 1_000_000n, true);
      return OK;
    }),
    proxy_continue_stream: counted("proxy_continue_stream", () => OK),
    proxy_set_effective_context: counted("proxy_set_effective_context", (id) => ((current = id), OK)),
    proxy_call_foreign_function: counted("proxy_call_foreign_function", (_name, _nameSize, _argument, _argumentSize, dataOut, sizeOut) => {
      handOver(new Uint8Array(0), dataOut, sizeOut);
      return OK;
    }),
    proxy_set_tick_period_milliseconds: () => OK,
    proxy_get_shared_data: counted("proxy_get_shared_data", (key, keySize, dataOut, sizeOut, casOut) => {
      const entry = sharedData.get(text(key, keySize));
      if (!entry) return NOT_FOUND;
      handOver(entry.value, dataOut, sizeOut);
      view().setUint32(casOut, entry.cas, true);
      return OK;
    }),
    proxy_set_shared_data: counted("proxy_set_shared_data", (key, keySize, value, valueSize, cas) => {
      const name = text(key, keySize);
      const entry = sharedData.get(name);
      if (cas !== 0 && entry && entry.cas !== cas) return CAS_MISMATCH;
      sharedData.set(name, { value: bytes().slice(value, value + valueSize), cas: nextCas++ });
      return OK;
    }),
    proxy_define_metric: counted("proxy_define_metric", (_kind, _name, _nameSize, idOut) => (view().setUint32(idOut, nextMetric++, true), OK)),
    proxy_increment_metric: counted("proxy_increment_metric", () => OK),
    proxy_record_metric: counted("proxy_record_metric", () => OK),
  };
  const wasi = {
    fd_write: () => 0,
    proc_exit: (code: number) => {
      throw new Error(`the module exited with ${code}`);
    },
  };
  const { instance } = await WebAssembly.instantiate(wasm, { env, wasi_snapshot_preview1: wasi } as unknown as WebAssembly.Imports);
  exports = instance.exports as typeof exports;
  exports._start?.();

  const ROOT = 1;
  current = ROOT;
  streams.set(ROOT, { request: [], response: [], requestBody: new Uint8Array(0), responseBody: new Uint8Array(0), filterState: new Map() });
  exports.proxy_on_context_create(ROOT, 0);
  if (!exports.proxy_on_configure(ROOT, configBytes.length)) throw new Error("the module refused its configuration");

  const body = encoder.encode(requestBody);
  const answerBytes = encoder.encode(answer);
  const requestHeaders: Headers = [[":authority", "127.0.0.1:10000"], [":path", "/v1/chat/completions"], [":method", "POST"], [":scheme", "http"],
    ["content-length", String(body.length)], ["content-type", "application/json"], ["authorization", "Bearer sk-bench-0000000000000000"],
    ["x-forwarded-proto", "http"], ["x-request-id", "4b1ef7a2-5f7e-4d6f-9e55-2f6a0a0c1d11"]];
  const responseHeaders: Headers = [[":status", "200"], ["content-type", "application/json"], ["content-length", String(answerBytes.length)],
    ["date", "Sun, 29 Nov 2026 14:00:00 GMT"], ["server", "envoy"], ["x-envoy-upstream-service-time", "0"]];
  const requestPairs = headerPairs(requestHeaders);
  const responsePairs = headerPairs(responseHeaders);
  let nextId = 2;
  const TICK_EVERY = 200;

  const on = (name: string, id: number, ...args: number[]) => {
    current = id;
    return exports[name](id, ...args);
  };
  function request(): void {
    const id = nextId++;
    const s: Stream = { request: requestHeaders.slice(), response: responseHeaders.slice(), requestBody: body, responseBody: answerBytes, filterState: new Map(), requestPairs, responsePairs };
    streams.set(id, s);
    on("proxy_on_context_create", id, ROOT);
    on("proxy_on_request_headers", id, requestHeaders.length, 0);
    // The body arrives, the module holds it, and Envoy hands over the whole buffer at its end.
    on("proxy_on_request_body", id, body.length, 0);
    if (on("proxy_on_request_body", id, body.length, 1) !== 0) throw new Error("the module did not let a benchmark request through");
    on("proxy_on_response_headers", id, responseHeaders.length, 0);
    on("proxy_on_response_body", id, answerBytes.length, 0);
    s.responseBody = new Uint8Array(0);
    on("proxy_on_response_body", id, 0, 1);
    on("proxy_on_log", id);
    on("proxy_on_done", id);
    on("proxy_on_delete", id);
    streams.delete(id);
    if (id % TICK_EVERY === 0) on("proxy_on_tick", ROOT);
  }
  return { request, hostCalls };
}

export interface ModuleProfile {
  /** Wall time per request, unprofiled: the module and the JavaScript answering its host calls. */
  usPerRequest: number;
  /** The module's own code per request (its functions; not V8's wrappers or the answering host). */
  moduleUsPerRequest: number;
  /** Of that, AssemblyScript's allocator and collector. */
  allocatorUsPerRequest: number;
  functions: { name: string; usPerRequest: number }[];
  hostCallsPerRequest: Record<string, number>;
}

/** Requests over which host calls are counted: enough for a tick (every 200) to weigh in as it does in Envoy. */
const COUNTED_REQUESTS = 1000;

const isAllocator = (name: string) => name.startsWith("~lib/rt/") || name.startsWith("assembly/host/collector/");

/**
 * Times requests through the module, then samples them with V8's profiler: the profiler slows what
 * it samples, so each function's share of the samples is applied to the unprofiled time.
 */
export async function profileModule(wasm: BufferSource, configuration: string, requestBody: string, answer: string, ms: number, top = 15): Promise<ModuleProfile> {
  const driver = await driveModule(wasm, configuration, requestBody, answer);
  const { usPerCall: usPerRequest } = timeCalls(driver.request, ms / 2);
  driver.hostCalls.clear();
  for (let i = 0; i < COUNTED_REQUESTS; i++) driver.request();
  const hostCallsPerRequest = Object.fromEntries([...driver.hostCalls].map(([name, n]) => [name, n / COUNTED_REQUESTS]));
  const { byFunction, total: samples } = await sampleWasm(driver.request, ms / 2, 50);
  const perRequest = (n: number) => (n / samples) * usPerRequest;
  const total = (filter: (name: string) => boolean) => perRequest([...byFunction].filter(([name]) => filter(name)).reduce((sum, [, n]) => sum + n, 0));
  return {
    usPerRequest,
    moduleUsPerRequest: total(() => true),
    allocatorUsPerRequest: total(isAllocator),
    functions: [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, n]) => ({ name, usPerRequest: perRequest(n) })),
    hostCallsPerRequest,
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { scenario: { type: "string", default: "mesh" }, workload: { type: "string", default: "1k" }, ms: { type: "string", default: "3000" } } });
  const mesh = discoverFilters().meshes.find((m) => m.name === values.scenario);
  const workload = workloads().find((w) => w.id === values.workload && !w.stream);
  if (!mesh || !workload) {
    console.error(`module-profile: --scenario is mesh or mesh-lean (build/mesh.wasm built), --workload one of ${workloads().filter((w) => !w.stream).map((w) => w.id).join(", ")}`);
    process.exit(2);
  }
  process.stdout.on("error", () => process.exit(0));
  mkdirSync(join(repoDir, ".tmp"), { recursive: true });
  const dir = mkdtempSync(join(repoDir, ".tmp", "module-profile-"));
  try {
    const named = join(dir, "mesh-named.wasm");
    await namedReleaseBuild("assembly/mesh/index.ts", "asconfig.json", named);
    const result = await profileModule(readFileSync(named), mesh.config, workload.body, jsonAnswer(), Number(values.ms));
    const fmt = (us: number) => us.toFixed(1).padStart(6);
    console.log(`${mesh.name}, ${workload.id}: ${result.usPerRequest.toFixed(1)} µs per request in V8, ${result.moduleUsPerRequest.toFixed(1)} µs of it in the module's own code, ${result.allocatorUsPerRequest.toFixed(1)} µs of that in the allocator and collector`);
    console.log(`host calls per request: ${Object.entries(result.hostCallsPerRequest).map(([name, n]) => `${name.replace(/^proxy_/, "")} ${+n.toFixed(1)}`).join(", ")}`);
    for (const f of result.functions) console.log(`${fmt(f.usPerRequest)} µs  ${f.name}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
