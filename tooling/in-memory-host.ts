// A proxy-wasm host in memory: runs the built modules (build/<filter>.wasm, build/mesh.wasm) in
// Node's V8, the engine Envoy embeds, and makes the callbacks Envoy makes for plugin configurations
// and HTTP streams, answering the ABI 0.2.1 host calls the modules import (assembly/host/imports.ts)
// as Envoy answers them. What Envoy keeps apart stays apart here: each worker has its own Wasm
// instance, with its own root contexts and streams, while shared data and stats belong to the
// process, as in Envoy. Time is a clock the caller moves, and each root's ticks fire as Envoy's
// timers would fire them.
//
// It records what a module did: local responses, header and body changes, filter state, metrics,
// continue_stream calls, gRPC calls, logs and a count of every host call. Routing, upstreams, gRPC
// services and the HTTP codec stay with the caller: it decides what comes back for a request the
// module let through, and what a gRPC call is answered (a call nobody answers closes with status 14
// at its timeout, as Envoy closes it). It is for tests and profiles that need no Envoy; what Envoy
// itself does is the e2e tests' business.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoDir } from "./envoy-bin.ts";
import { METRIC_FLUSH_MS } from "./stats.ts";

/** Header names and values in order, names in lower case as Envoy's header maps hold them. */
export type HeaderList = [string, string][];

// WasmResult values.
const OK = 0;
const NOT_FOUND = 1;
const BAD_ARGUMENT = 2;
const CAS_MISMATCH = 8;

// Header map and buffer types of the ABI.
const REQUEST_HEADERS = 0;
const RESPONSE_HEADERS = 2;
const REQUEST_BODY = 0;
const RESPONSE_BODY = 1;
const GRPC_RECEIVE_BUFFER = 5;
const PLUGIN_CONFIGURATION = 7;
const STREAM_REQUEST = 0;

// What callbacks return: Continue in FilterHeadersStatus and FilterDataStatus alike, and the
// FilterDataStatus that drops the body it was handed.
const CONTINUE = 0;
const STOP_ITERATION_NO_BUFFER = 3;

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "critical"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const METRIC_KINDS = ["counter", "gauge", "histogram"] as const;

/** A stat, process-wide by name as Envoy keeps them whichever worker defined it. */
export interface Metric {
  kind: (typeof METRIC_KINDS)[number];
  /** A counter's total or a gauge's value; a histogram's number of samples. */
  value: number;
  /** A histogram's recorded values, in order. */
  samples: number[];
}

export interface LogLine {
  worker: number;
  /** The context the module was acting on (a stream's, or a root's during configure and ticks). */
  contextId: number;
  level: LogLevel;
  message: string;
}

export interface LocalResponse {
  status: number;
  /** What Envoy shows as %RESPONSE_CODE_DETAILS%. */
  details: string;
  headers: HeaderList;
  body: string;
}

/** What a stream saw happen, in order: each callback as it was made (with what it returned), and what the module did in it. */
export type StreamEvent =
  | { kind: "callback"; name: string; result: number | undefined }
  | { kind: "set-header" | "remove-header"; map: "request" | "response"; name: string; value?: string }
  | { kind: "set-body"; buffer: "request" | "response"; size: number }
  | { kind: "filter-state"; name: string; value: string }
  | { kind: "continue"; stream: "request" | "response" }
  | { kind: "clear-route-cache" }
  | { kind: "local-response"; status: number };

export interface RequestSpec {
  /** The request's whole header map, pseudo-headers first; a list is serialized once however many streams use it, so it must not change afterwards. */
  headers: HeaderList;
  /** The body `Root.send` hands over in one piece; none: the request ends with its headers. */
  body?: string | Uint8Array;
  /** Host properties besides the stream's own, by path with NUL between segments ("connection\0uri_san_peer_certificate"). */
  properties?: Record<string, string | Uint8Array>;
}

export interface ResponseSpec {
  status?: number;
  /** Besides :status and content-length; default a JSON content type. */
  headers?: HeaderList;
  body?: string | Uint8Array;
}

export interface HostOptions {
  /** Read time from Date.now() instead of a clock only advance() moves (profiles want real time; tests want control). */
  wallClock?: boolean;
  /** Where the host's own clock starts, in ms since the epoch; fixed by default, so that a run repeats exactly. */
  startMs?: number;
  /** What proxy_get_log_level answers; lines below it are dropped, as Envoy drops them. */
  logLevel?: LogLevel;
}

type Exports = { memory: WebAssembly.Memory; malloc(size: number): number } & Record<string, ((...args: number[]) => number | undefined) | undefined>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);
const bytesOf = (data: string | Uint8Array) => (typeof data === "string" ? encoder.encode(data) : data);

function int64(value: bigint): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigInt64(0, value, true);
  return bytes;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Header pairs as the ABI serializes them: count, (name size, value size) pairs, NUL-ended bytes. */
function headerPairs(headers: HeaderList): Uint8Array {
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

function parseHeaderPairs(bytes: Uint8Array): HeaderList {
  if (bytes.length < 4) return [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(0, true);
  const headers: HeaderList = [];
  let at = 4 + 8 * count;
  for (let i = 0; i < count; i++) {
    const nameSize = view.getUint32(4 + 8 * i, true);
    const valueSize = view.getUint32(8 + 8 * i, true);
    const name = decoder.decode(bytes.subarray(at, at + nameSize));
    at += nameSize + 1;
    headers.push([name, decoder.decode(bytes.subarray(at, at + valueSize))]);
    at += valueSize + 1;
  }
  return headers;
}

/** Serialized header lists, by the list the caller handed over: a driver that sends one list many times pays for one serialization. */
const serialized = new WeakMap<HeaderList, Uint8Array>();

function serializedOnce(headers: HeaderList): Uint8Array {
  let pairs = serialized.get(headers);
  if (!pairs) serialized.set(headers, (pairs = headerPairs(headers)));
  return pairs;
}

/** Envoy's HeaderMap::byteSize(): names and values, no separators. */
const headerBytes = (headers: HeaderList) => headers.reduce((sum, [name, value]) => sum + encoder.encode(name).length + encoder.encode(value).length, 0);

/** The first value of a header, as proxy_get_header_map_value answers. */
export function headerValue(headers: HeaderList, name: string): string | undefined {
  return headers.find(([n]) => n === name)?.[1];
}

function checkNames(headers: HeaderList): void {
  const upper = headers.find(([name]) => name !== name.toLowerCase());
  if (upper) throw new Error(`header name ${upper[0]} is not lower case: Envoy's header maps hold lower-case names`);
}

const compiled = new Map<string, WebAssembly.Module>();

/** build/<name>.wasm, compiled once per process: every worker instantiates the same module, as Envoy's do. */
export function builtModule(name: string): WebAssembly.Module {
  let module = compiled.get(name);
  if (!module) {
    const file = join(repoDir, "build", `${name}.wasm`);
    if (!existsSync(file)) throw new Error(`${file} does not exist: run npm run build`);
    module = new WebAssembly.Module(readFileSync(file));
    compiled.set(name, module);
  }
  return module;
}

/** A request as an OpenAI-style client sends it: POST with a JSON body, `headers` after the usual ones. */
export function jsonRequest(body: unknown, headers: Record<string, string> = {}, path = "/v1/chat/completions"): RequestSpec & { body: string } {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return {
    headers: [[":authority", "llm.local"], [":path", path], [":method", "POST"], [":scheme", "http"], ["content-type", "application/json"],
      ["content-length", String(encoder.encode(text).length)], ...Object.entries(headers)],
    body: text,
  };
}

/** Envoy's process-wide key-value store with compare-and-swap: one for every worker of the process. */
export class SharedData {
  private entries = new Map<string, { value: Uint8Array; cas: number }>();
  private nextCas = 1;

  get(key: string): { value: Uint8Array; cas: number } | undefined {
    return this.entries.get(key);
  }

  /** A write with CAS 0 always lands; any other must match the entry's current CAS. */
  set(key: string, value: Uint8Array, cas: number): number {
    const entry = this.entries.get(key);
    if (cas !== 0 && entry && entry.cas !== cas) return CAS_MISMATCH;
    this.entries.set(key, { value, cas: this.nextCas++ });
    return OK;
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }
}

/** The process: its clock, its shared data and stats, the log, and the workers that run the module. */
export class InMemoryHost {
  readonly workers: Worker[] = [];
  readonly sharedData = new SharedData();
  readonly metrics = new Map<string, Metric>();
  readonly logs: LogLine[] = [];
  readonly logLevel: number;
  private clockMs: number | null;

  constructor(options: HostOptions = {}) {
    this.clockMs = options.wallClock ? null : (options.startMs ?? Date.UTC(2026, 10, 29, 14));
    this.logLevel = LOG_LEVELS.indexOf(options.logLevel ?? "info");
  }

  nowMs(): number {
    return this.clockMs ?? Date.now();
  }

  /** Another worker: a fresh instance of the module, with contexts of its own and this process's shared data and stats. */
  async startWorker(wasm: WebAssembly.Module | BufferSource): Promise<Worker> {
    const worker = new Worker(this, this.workers.length);
    await worker.instantiate(wasm);
    this.workers.push(worker);
    return worker;
  }

  /**
   * Moves the clock `ms` on, stopping at every tick and gRPC timeout due on the way: each root is
   * ticked at the period it asked for, earliest first, as Envoy's per-root timers fire, and a call
   * still unanswered at its timeout is closed with status 14, as Envoy closes it.
   */
  advance(ms: number): void {
    if (this.clockMs === null) throw new Error("advance() moves the host's own clock; this host reads the wall clock");
    const until = this.clockMs + ms;
    for (;;) {
      let due: { at: number; fire: () => void } | undefined;
      for (const worker of this.workers) {
        for (const root of worker.roots.values()) {
          const at = root.nextTickMs;
          if (at !== undefined && at <= until && (due === undefined || at < due.at)) due = { at, fire: () => root.tick() };
        }
        for (const call of worker.grpcCalls) {
          if (call.deadlineMs <= until && (due === undefined || call.deadlineMs < due.at)) due = { at: call.deadlineMs, fire: () => call.close(14, "upstream request timeout") };
        }
      }
      if (!due) break;
      this.clockMs = Math.max(this.clockMs, due.at);
      due.fire();
    }
    this.clockMs = until;
  }

  /**
   * Moves the clock on by the modules' metric flush period: every counter and gauge change they
   * hold has then reached the host's metrics, from their roots' ticks, as it reaches Envoy's
   * (assembly/host/metric-batch.ts). Changes reach metric() no sooner.
   */
  advancePastMetricFlush(): void {
    this.advance(METRIC_FLUSH_MS);
  }

  /** A counter's or gauge's value, 0 for a stat no module defined. */
  metric(name: string): number {
    return this.metrics.get(name)?.value ?? 0;
  }
}

/** One worker thread's Wasm instance of the module: its roots, its streams, and which context its host calls act on. */
export class Worker {
  readonly roots = new Map<number, Root>();
  readonly streams = new Map<number, Stream>();
  /** Host calls the module made, by import name; the caller may clear it. */
  readonly hostCalls = new Map<string, number>();
  /** gRPC calls started and not answered yet, oldest first. */
  readonly grpcCalls: GrpcCall[] = [];
  /** What the module wrote to stdout and stderr (AssemblyScript's abort message, before proc_exit). */
  output = "";
  private exports!: Exports;
  /** The context host calls act on: the callback's, or the one proxy_set_effective_context made current. */
  private current = 0;
  private nextContextId = 1;
  private metricNames: string[] = [];
  private localReplies: Stream[] = [];
  private nextGrpcToken = 1;
  /** While proxy_on_grpc_receive runs: the message, read as the gRPC receive buffer. */
  private grpcMessage: Uint8Array | undefined;
  /** While proxy_on_grpc_close runs: what proxy_get_status answers. */
  private grpcStatus: { code: number; message: string } | undefined;

  constructor(readonly host: InMemoryHost, readonly index: number) {}

  async instantiate(wasm: WebAssembly.Module | BufferSource): Promise<void> {
    const imports = { env: this.hostFunctions(), wasi_snapshot_preview1: this.wasi() } as unknown as WebAssembly.Imports;
    const instance = wasm instanceof WebAssembly.Module ? await WebAssembly.instantiate(wasm, imports) : (await WebAssembly.instantiate(wasm, imports)).instance;
    this.exports = instance.exports as Exports;
    if (!this.exports.proxy_abi_version_0_2_1) throw new Error("the module exports no proxy_abi_version_0_2_1: Envoy would refuse it");
    (this.exports._initialize ?? this.exports._start)?.();
  }

  /**
   * A plugin configuration, as Envoy starts one: a root context, then proxy_on_configure. A
   * configuration the module refuses throws, with what the module logged as the reason.
   */
  configure(configuration: string | object): Root {
    const text = typeof configuration === "string" ? configuration : JSON.stringify(configuration);
    const root = new Root(this, this.newContextId(), encoder.encode(text));
    this.roots.set(root.id, root);
    this.call("proxy_on_context_create", root.id, 0);
    const logged = this.host.logs.length;
    if (!this.call("proxy_on_configure", root.id, root.configuration.length)) {
      root.delete();
      const reasons = this.host.logs.slice(logged).filter((line) => line.level === "critical" || line.level === "error");
      throw new Error(`the module refused its configuration: ${reasons.map((line) => line.message).join("; ") || "(nothing logged)"}`);
    }
    return root;
  }

  /** Calls an export Envoy calls, on behalf of `contextId`; a callback the module does not export acts as continue (0) or done (1). */
  call(name: string, contextId: number, ...args: number[]): number | undefined {
    const callback = this.exports[name];
    if (!callback) return name === "proxy_on_done" || name === "proxy_on_configure" ? 1 : 0;
    this.current = contextId;
    const result = callback(contextId, ...args);
    // Envoy sends a local response once the callback that asked for it has returned.
    for (let stream; (stream = this.localReplies.shift()); ) stream.deliverLocalResponse();
    return result;
  }

  /** A stream the module answered in the callback under way. */
  answeredLocally(stream: Stream): void {
    this.localReplies.push(stream);
  }

  /** Envoy's answer to a call: proxy_on_grpc_receive on the root that made it, which reads the message as a buffer meanwhile. */
  receiveGrpc(call: GrpcCall, message: Uint8Array): void {
    this.endGrpc(call);
    this.grpcMessage = message;
    try {
      this.call("proxy_on_grpc_receive", call.rootId, call.token, message.length);
    } finally {
      this.grpcMessage = undefined;
    }
  }

  /** A call that ends without an answer: proxy_on_grpc_close on the root that made it, which reads the status meanwhile. */
  closeGrpc(call: GrpcCall, code: number, message: string): void {
    this.endGrpc(call);
    this.grpcStatus = { code, message };
    try {
      this.call("proxy_on_grpc_close", call.rootId, call.token, code);
    } finally {
      this.grpcStatus = undefined;
    }
  }

  private endGrpc(call: GrpcCall): void {
    const at = this.grpcCalls.indexOf(call);
    if (at < 0) throw new Error(`gRPC call ${call.token} was answered already`);
    this.grpcCalls.splice(at, 1);
  }

  newContextId(): number {
    return this.nextContextId++;
  }

  private currentStream(): Stream | undefined {
    return this.streams.get(this.current);
  }

  /** The root a host call acts for: the current root, or the current stream's. */
  private currentRoot(): Root | undefined {
    return this.roots.get(this.current) ?? this.currentStream()?.root;
  }

  private hostFunctions(): Record<string, (...args: never[]) => number> {
    const host = this.host;
    const memory = () => new Uint8Array(this.exports.memory.buffer);
    const view = () => new DataView(this.exports.memory.buffer);
    const text = (at: number, size: number) => decoder.decode(memory().subarray(at, at + size));
    const copy = (at: number, size: number) => memory().slice(at, at + size);
    /** Hands bytes to the module as Envoy does: in a block from the module's malloc, address and size in the out-parameters. */
    const handOver = (data: Uint8Array, dataOut: number, sizeOut: number) => {
      const at = data.length === 0 ? 0 : this.exports.malloc(data.length) >>> 0;
      if (at) memory().set(data, at);
      view().setUint32(dataOut, at, true);
      view().setUint32(sizeOut, data.length, true);
    };
    const stream = () => this.currentStream();
    const headers = (map: number) => (map === REQUEST_HEADERS ? stream()?.request : map === RESPONSE_HEADERS ? stream()?.response : undefined);
    const buffer = (type: number) =>
      type === PLUGIN_CONFIGURATION ? this.currentRoot()?.configuration
      : type === GRPC_RECEIVE_BUFFER ? this.grpcMessage
      : type === REQUEST_BODY ? stream()?.requestBuffer
      : type === RESPONSE_BODY ? stream()?.responseBuffer
      : undefined;
    const metric = (id: number) => host.metrics.get(this.metricNames[id]);

    const calls = {
      proxy_log: (level: number, message: number, size: number) => {
        if (level >= host.logLevel) host.logs.push({ worker: this.index, contextId: this.current, level: LOG_LEVELS[level] ?? "critical", message: text(message, size) });
        return OK;
      },
      proxy_get_log_level: (out: number) => (view().setUint32(out, host.logLevel, true), OK),
      proxy_get_buffer_bytes: (type: number, start: number, length: number, dataOut: number, sizeOut: number) => {
        const source = buffer(type);
        if (!source) return NOT_FOUND;
        handOver(source.subarray(start, start + length), dataOut, sizeOut);
        return OK;
      },
      proxy_set_buffer_bytes: (type: number, start: number, length: number, data: number, size: number) => {
        const s = stream();
        if (!s || (type !== REQUEST_BODY && type !== RESPONSE_BODY)) return NOT_FOUND;
        return s.replaceBuffer(type === REQUEST_BODY ? "request" : "response", start, length, copy(data, size));
      },
      proxy_get_header_map_value: (map: number, key: number, keySize: number, dataOut: number, sizeOut: number) => {
        const found = headerValue(headers(map) ?? [], text(key, keySize).toLowerCase());
        if (found === undefined) return NOT_FOUND;
        handOver(encoder.encode(found), dataOut, sizeOut);
        return OK;
      },
      proxy_get_header_map_pairs: (map: number, dataOut: number, sizeOut: number) => {
        const s = stream();
        const pairs = map === REQUEST_HEADERS ? s?.requestPairs() : map === RESPONSE_HEADERS ? s?.responsePairs() : undefined;
        handOver(pairs ?? headerPairs([]), dataOut, sizeOut);
        return OK;
      },
      proxy_get_header_map_size: (map: number, sizeOut: number) => {
        view().setUint32(sizeOut, headerBytes(headers(map) ?? []), true);
        return OK;
      },
      proxy_replace_header_map_value: (map: number, key: number, keySize: number, value: number, valueSize: number) => {
        const s = stream();
        if (!s || (map !== REQUEST_HEADERS && map !== RESPONSE_HEADERS)) return BAD_ARGUMENT;
        s.setHeader(map === REQUEST_HEADERS ? "request" : "response", text(key, keySize).toLowerCase(), text(value, valueSize));
        return OK;
      },
      proxy_remove_header_map_value: (map: number, key: number, keySize: number) => {
        const s = stream();
        if (!s || (map !== REQUEST_HEADERS && map !== RESPONSE_HEADERS)) return BAD_ARGUMENT;
        s.removeHeader(map === REQUEST_HEADERS ? "request" : "response", text(key, keySize).toLowerCase());
        return OK;
      },
      proxy_send_local_response: (status: number, details: number, detailsSize: number, body: number, bodySize: number, pairs: number, pairsSize: number) => {
        const s = stream();
        if (!s) return BAD_ARGUMENT;
        s.answerLocally({ status, details: text(details, detailsSize), body: text(body, bodySize), headers: parseHeaderPairs(copy(pairs, pairsSize)) });
        return OK;
      },
      proxy_get_property: (path: number, pathSize: number, dataOut: number, sizeOut: number) => {
        const value = stream()?.property(text(path, pathSize));
        if (!value) return NOT_FOUND;
        handOver(value, dataOut, sizeOut);
        return OK;
      },
      proxy_set_property: (path: number, pathSize: number, value: number, valueSize: number) => {
        const s = stream();
        if (!s) return NOT_FOUND;
        s.setFilterState(text(path, pathSize), text(value, valueSize));
        return OK;
      },
      proxy_get_current_time_nanoseconds: (out: number) => {
        view().setBigUint64(out, BigInt(host.nowMs()) * 1_000_000n, true);
        return OK;
      },
      proxy_continue_stream: (type: number) => {
        const s = stream();
        if (!s) return NOT_FOUND;
        s.continueStream(type === STREAM_REQUEST ? "request" : "response");
        return OK;
      },
      proxy_set_effective_context: (id: number) => {
        if (!this.streams.has(id) && !this.roots.has(id)) return BAD_ARGUMENT;
        this.current = id;
        return OK;
      },
      proxy_call_foreign_function: (name: number, nameSize: number, _argument: number, _argumentSize: number, dataOut: number, sizeOut: number) => {
        if (text(name, nameSize) !== "clear_route_cache") return NOT_FOUND;
        stream()?.events.push({ kind: "clear-route-cache" });
        handOver(EMPTY, dataOut, sizeOut);
        return OK;
      },
      // Envoy makes every call as the root of the context that asks, and answers it there.
      proxy_grpc_call: (service: number, serviceSize: number, serviceName: number, serviceNameSize: number, method: number, methodSize: number,
        _metadata: number, _metadataSize: number, message: number, messageSize: number, timeoutMs: number, tokenOut: number) => {
        const root = this.currentRoot();
        if (!root) return BAD_ARGUMENT;
        const call = new GrpcCall(this, this.nextGrpcToken++, root.id, copy(service, serviceSize), `/${text(serviceName, serviceNameSize)}/${text(method, methodSize)}`,
          copy(message, messageSize), host.nowMs() + timeoutMs);
        this.grpcCalls.push(call);
        view().setUint32(tokenOut, call.token, true);
        return OK;
      },
      proxy_get_status: (codeOut: number, messageOut: number, messageSizeOut: number) => {
        const status = this.grpcStatus;
        if (!status) return NOT_FOUND;
        view().setUint32(codeOut, status.code, true);
        handOver(encoder.encode(status.message), messageOut, messageSizeOut);
        return OK;
      },
      proxy_set_tick_period_milliseconds: (period: number) => {
        const root = this.currentRoot();
        if (!root) return BAD_ARGUMENT;
        root.setTickPeriod(period);
        return OK;
      },
      proxy_get_shared_data: (key: number, keySize: number, dataOut: number, sizeOut: number, casOut: number) => {
        const entry = host.sharedData.get(text(key, keySize));
        if (!entry) return NOT_FOUND;
        handOver(entry.value, dataOut, sizeOut);
        view().setUint32(casOut, entry.cas, true);
        return OK;
      },
      proxy_set_shared_data: (key: number, keySize: number, value: number, valueSize: number, cas: number) =>
        host.sharedData.set(text(key, keySize), copy(value, valueSize), cas),
      proxy_define_metric: (kind: number, name: number, nameSize: number, idOut: number) => {
        const metricName = text(name, nameSize);
        if (!METRIC_KINDS[kind]) return BAD_ARGUMENT;
        if (!host.metrics.has(metricName)) host.metrics.set(metricName, { kind: METRIC_KINDS[kind], value: 0, samples: [] });
        view().setUint32(idOut, this.metricNames.push(metricName) - 1, true);
        return OK;
      },
      proxy_increment_metric: (id: number, delta: bigint) => {
        const m = metric(id);
        if (!m) return NOT_FOUND;
        // Envoy's counters only go up, and a histogram takes values with proxy_record_metric.
        if (m.kind === "histogram" || (m.kind === "counter" && delta < 0n)) return BAD_ARGUMENT;
        m.value += Number(delta);
        return OK;
      },
      proxy_record_metric: (id: number, value: bigint) => {
        const m = metric(id);
        if (!m) return NOT_FOUND;
        if (m.kind === "histogram") m.value = m.samples.push(Number(value));
        else if (m.kind === "gauge") m.value = Number(value);
        else m.value += Number(value);
        return OK;
      },
    };
    const counted: Record<string, (...args: never[]) => number> = {};
    for (const [name, answer] of Object.entries(calls) as [string, (...args: never[]) => number][]) {
      counted[name] = (...args) => {
        this.hostCalls.set(name, (this.hostCalls.get(name) ?? 0) + 1);
        return answer(...args);
      };
    }
    return counted;
  }

  private wasi() {
    return {
      fd_write: (_fd: number, iovs: number, iovsLength: number, writtenOut: number) => {
        const view = new DataView(this.exports.memory.buffer);
        let written = 0;
        for (let i = 0; i < iovsLength; i++) {
          const at = view.getUint32(iovs + 8 * i, true);
          const size = view.getUint32(iovs + 8 * i + 4, true);
          this.output += decoder.decode(new Uint8Array(this.exports.memory.buffer, at, size));
          written += size;
        }
        view.setUint32(writtenOut, written, true);
        return 0;
      },
      proc_exit: (code: number) => {
        throw new Error(`the module exited with ${code}${this.output ? `: ${this.output.trim()}` : ""}`);
      },
    };
  }
}

/** A unary gRPC call a module started: the caller answers it or closes it, as the service and Envoy would. */
export class GrpcCall {
  constructor(
    readonly worker: Worker,
    readonly token: number,
    /** The root context Envoy answers it on. */
    readonly rootId: number,
    /** The serialized GrpcService (or cluster name) the module named. */
    readonly service: Uint8Array,
    /** /<service>/<method>. */
    readonly path: string,
    readonly message: Uint8Array,
    /** When Envoy would close it unanswered (host.advance() does). */
    readonly deadlineMs: number,
  ) {}

  receive(message: Uint8Array): void {
    this.worker.receiveGrpc(this, message);
  }

  close(code: number, message = ""): void {
    this.worker.closeGrpc(this, code, message);
  }
}

/** One plugin configuration on one worker: its root context, the streams it creates, its ticks. */
export class Root {
  /** The period the module asked for with proxy_set_tick_period_milliseconds; 0: no ticks. */
  tickPeriodMs = 0;
  /** When the next tick is due on the host's clock, while ticks are asked for. */
  nextTickMs: number | undefined;

  constructor(readonly worker: Worker, readonly id: number, readonly configuration: Uint8Array) {}

  /** A new HTTP stream under this root (proxy_on_context_create); Envoy has not handed it anything yet. */
  stream(request: RequestSpec): Stream {
    const stream = new Stream(this, this.worker.newContextId(), request);
    this.worker.streams.set(stream.id, stream);
    this.worker.call("proxy_on_context_create", stream.id, this.id);
    return stream;
  }

  /** A request that arrived whole: its headers, then its body in one piece with the end of the stream. */
  send(request: RequestSpec): Stream {
    const stream = this.stream(request);
    stream.sendRequestHeaders(request.body === undefined);
    if (request.body !== undefined) stream.sendRequestBody(bytesOf(request.body), true);
    return stream;
  }

  /** As Envoy's timer fires: the next tick is armed first, then proxy_on_tick. */
  tick(): void {
    this.nextTickMs = this.tickPeriodMs > 0 ? this.worker.host.nowMs() + this.tickPeriodMs : undefined;
    this.worker.call("proxy_on_tick", this.id);
  }

  /** Envoy re-arms the timer at the new period from now; 0 stops it. */
  setTickPeriod(ms: number): void {
    this.tickPeriodMs = ms;
    this.nextTickMs = ms > 0 ? this.worker.host.nowMs() + ms : undefined;
  }

  /** The configuration is gone (replaced, or its listener removed): proxy_on_done, then proxy_on_delete. */
  delete(): void {
    this.worker.call("proxy_on_done", this.id);
    this.worker.call("proxy_on_delete", this.id);
    this.worker.roots.delete(this.id);
  }
}

/**
 * One HTTP stream. The send* methods make the callbacks Envoy makes as the request and the answer
 * arrive, and follow Envoy's filter manager: a body the module stops with StopIterationAndBuffer is
 * kept and handed over whole next time, a Continue lets everything so far go upstream (held headers
 * included), and continue_stream does the same from anywhere. A local response ends the request:
 * Envoy hands it to the response callbacks (its encoder filters, this one's included) and makes no
 * more callbacks for the request or for an upstream answer.
 */
export class Stream {
  /** The request headers as they stand, the module's changes included. */
  readonly request: HeaderList;
  /** The response headers as they stand, once the answer came. */
  response: HeaderList = [];
  /** What the module set with proxy_set_property: the stream's filter state, by name. */
  readonly filterState = new Map<string, string>();
  readonly events: StreamEvent[] = [];
  localResponse: LocalResponse | undefined;
  /** The body the module has been handed and holds; what proxy_get_buffer_bytes reads. */
  requestBuffer: Uint8Array = EMPTY;
  responseBuffer: Uint8Array = EMPTY;
  /** The request's headers went upstream. */
  headersForwarded = false;
  /** The whole request went upstream: headers, body, and the end of the stream. */
  forwarded = false;
  closed = false;
  private bodyForwarded: Uint8Array[] = [];
  private requestEnded = false;
  private readonly startMs: number;
  private readonly properties: Map<string, Uint8Array>;
  private requestSource: HeaderList | undefined;
  private responseSource: HeaderList | undefined;
  private requestSerialized: Uint8Array | undefined;
  private responseSerialized: Uint8Array | undefined;

  constructor(readonly root: Root, readonly id: number, spec: RequestSpec) {
    checkNames(spec.headers);
    this.request = spec.headers.slice();
    this.requestSource = spec.headers;
    this.startMs = root.worker.host.nowMs();
    this.properties = new Map(Object.entries(spec.properties ?? {}).map(([path, value]) => [path, bytesOf(value)]));
  }

  get worker(): Worker {
    return this.root.worker;
  }

  /** Where the request stands: "forwarded", "answered <status>" (a local response), "held" by the module, or "closed" before either. */
  get state(): string {
    if (this.localResponse) return `answered ${this.localResponse.status}`;
    if (this.forwarded) return "forwarded";
    return this.closed ? "closed" : "held";
  }

  /** The first value of a request header as it stands now. */
  header(name: string): string | undefined {
    return headerValue(this.request, name);
  }

  responseHeader(name: string): string | undefined {
    return headerValue(this.response, name);
  }

  /** The request body as it went upstream. */
  forwardedBody(): string {
    return decoder.decode(this.bodyForwarded.reduce(concat, EMPTY));
  }

  /** How often the module resumed the request with continue_stream. */
  get continues(): number {
    return this.events.filter((e) => e.kind === "continue" && e.stream === "request").length;
  }

  sendRequestHeaders(endOfStream: boolean): number | undefined {
    if (this.localResponse) return undefined;
    this.requestEnded = endOfStream;
    const result = this.callback("proxy_on_request_headers", this.request.length, endOfStream ? 1 : 0);
    if (result === CONTINUE && !this.localResponse) this.passRequest();
    return result;
  }

  /** A body chunk; the module sees it added to what it holds. */
  sendRequestBody(chunk: string | Uint8Array, endOfStream: boolean): number | undefined {
    if (this.localResponse) return undefined;
    this.requestEnded = endOfStream;
    this.requestBuffer = concat(this.requestBuffer, bytesOf(chunk));
    const result = this.callback("proxy_on_request_body", this.requestBuffer.length, endOfStream ? 1 : 0);
    if (this.localResponse || result === STOP_ITERATION_NO_BUFFER) this.requestBuffer = EMPTY;
    else if (result === CONTINUE) this.passRequest();
    return result;
  }

  /** The answer's headers, from upstream; `headers` holds :status. */
  sendResponseHeaders(headers: HeaderList, endOfStream: boolean): number | undefined {
    if (this.localResponse) return undefined;
    this.properties.set("response\0code", int64(BigInt(Number(headerValue(headers, ":status") ?? 0))));
    this.properties.set("response\0code_details", encoder.encode("via_upstream"));
    return this.giveResponseHeaders(headers, endOfStream);
  }

  sendResponseBody(chunk: string | Uint8Array, endOfStream: boolean): number | undefined {
    if (this.localResponse) return undefined;
    return this.giveResponseBody(bytesOf(chunk), endOfStream);
  }

  /** The local response the module sent, through the module's response callbacks as Envoy's encoder filters pass it. */
  deliverLocalResponse(): void {
    const { status, headers, body } = this.localResponse!;
    const bytes = encoder.encode(body);
    this.giveResponseHeaders([[":status", String(status)], ...headers, ["content-length", String(bytes.length)]], bytes.length === 0);
    if (bytes.length > 0) this.giveResponseBody(bytes, true);
  }

  /**
   * The upstream's answer to a request the module let through, then the stream's end; a request the
   * module answered itself only ends. One the module still holds has no answer yet: that throws.
   */
  answer(response: ResponseSpec = {}): this {
    if (this.closed) throw new Error(`stream ${this.id} is closed already`);
    if (!this.localResponse) {
      if (!this.forwarded) throw new Error(`stream ${this.id} is ${this.state}: no answer can have come`);
      const body = bytesOf(response.body ?? "");
      const headers: HeaderList = [[":status", String(response.status ?? 200)], ...(response.headers ?? [["content-type", "application/json"]]), ["content-length", String(body.length)]];
      this.sendResponseHeaders(headers, body.length === 0);
      if (body.length > 0) this.sendResponseBody(body, true);
    }
    return this.close();
  }

  /** The stream ends (answered, or the client went away): proxy_on_log, proxy_on_done, proxy_on_delete. */
  close(): this {
    if (this.closed) return this;
    if (!this.properties.has("response\0code_details")) this.properties.set("response\0code_details", encoder.encode("downstream_remote_disconnect"));
    this.callback("proxy_on_log");
    this.callback("proxy_on_done");
    this.callback("proxy_on_delete");
    this.closed = true;
    this.worker.streams.delete(this.id);
    return this;
  }

  requestPairs(): Uint8Array {
    return (this.requestSerialized ??= this.requestSource ? serializedOnce(this.requestSource) : headerPairs(this.request));
  }

  responsePairs(): Uint8Array {
    return (this.responseSerialized ??= this.responseSource ? serializedOnce(this.responseSource) : headerPairs(this.response));
  }

  /** A host property: the stream's own (request time, response code and details), the caller's, then filter state. */
  property(path: string): Uint8Array | undefined {
    if (path === "request\0time") return int64(BigInt(this.startMs) * 1_000_000n);
    if (path === "request\0total_size") return int64(BigInt(headerBytes(this.request) + this.requestBuffer.length + this.bodyForwarded.reduce((n, c) => n + c.length, 0)));
    const own = this.properties.get(path);
    if (own) return own;
    const state = this.filterState.get(path);
    return state === undefined ? undefined : encoder.encode(state);
  }

  setHeader(map: "request" | "response", name: string, value: string): void {
    const headers = this.changing(map);
    removeAll(headers, name);
    headers.push([name, value]);
    this.events.push({ kind: "set-header", map, name, value });
  }

  removeHeader(map: "request" | "response", name: string): void {
    removeAll(this.changing(map), name);
    this.events.push({ kind: "remove-header", map, name });
  }

  setFilterState(name: string, value: string): void {
    this.filterState.set(name, value);
    this.events.push({ kind: "filter-state", name, value });
  }

  /** Envoy's Buffer::copyFrom: at 0 it drains `length` bytes and puts `data` first; at or past the end it appends. */
  replaceBuffer(buffer: "request" | "response", start: number, length: number, data: Uint8Array): number {
    const current = buffer === "request" ? this.requestBuffer : this.responseBuffer;
    let next: Uint8Array;
    if (start === 0) next = concat(data, current.subarray(length));
    else if (start >= current.length) next = concat(current, data);
    else return BAD_ARGUMENT;
    if (buffer === "request") this.requestBuffer = next;
    else this.responseBuffer = next;
    this.events.push({ kind: "set-body", buffer, size: next.length });
    return OK;
  }

  answerLocally(response: LocalResponse): void {
    if (this.localResponse) throw new Error(`stream ${this.id}: a second local response (${response.status} after ${this.localResponse.status})`);
    this.localResponse = response;
    this.properties.set("response\0code", int64(BigInt(response.status)));
    this.properties.set("response\0code_details", encoder.encode(response.details));
    this.events.push({ kind: "local-response", status: response.status });
    this.worker.answeredLocally(this);
  }

  continueStream(stream: "request" | "response"): void {
    this.events.push({ kind: "continue", stream });
    if (stream === "request") this.passRequest();
  }

  /** What arrived so far goes upstream: the headers, the body the module held, and the end once the client sent it. */
  private passRequest(): void {
    this.headersForwarded = true;
    if (this.requestBuffer.length > 0) this.bodyForwarded.push(this.requestBuffer);
    this.requestBuffer = EMPTY;
    if (this.requestEnded) this.forwarded = true;
  }

  private changing(map: "request" | "response"): HeaderList {
    if (map === "request") {
      this.requestSource = undefined;
      this.requestSerialized = undefined;
      return this.request;
    }
    this.responseSource = undefined;
    this.responseSerialized = undefined;
    return this.response;
  }

  private giveResponseHeaders(headers: HeaderList, endOfStream: boolean): number | undefined {
    checkNames(headers);
    this.response = headers.slice();
    this.responseSource = headers;
    this.responseSerialized = undefined;
    return this.callback("proxy_on_response_headers", headers.length, endOfStream ? 1 : 0);
  }

  private giveResponseBody(chunk: Uint8Array, endOfStream: boolean): number | undefined {
    this.responseBuffer = concat(this.responseBuffer, chunk);
    const result = this.callback("proxy_on_response_body", this.responseBuffer.length, endOfStream ? 1 : 0);
    if (result === CONTINUE || result === STOP_ITERATION_NO_BUFFER) this.responseBuffer = EMPTY;
    return result;
  }

  /** The event goes in first, so that what the module does in the callback follows it. */
  private callback(name: string, ...args: number[]): number | undefined {
    const event: StreamEvent & { kind: "callback" } = { kind: "callback", name, result: undefined };
    this.events.push(event);
    return (event.result = this.worker.call(name, this.id, ...args));
  }
}

function removeAll(headers: HeaderList, name: string): void {
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i][0] === name) headers.splice(i, 1);
}
