// What a filter builds on: a root context per plugin configuration and a context per HTTP stream,
// with the callbacks Envoy makes on them, and the registry that maps Envoy's context ids to them
// for the entry points in abi.ts.
//
// Envoy runs one Wasm VM per thread for every plugin instance that shares the module, and gives each
// instance (another listener, or a new pluginConfig pushed over xDS) a root context of its own. Each
// root is kept, configured, ticked and deleted under its own id, and a stream is created by the root
// Envoy names as its parent: with a single root per VM, a second configuration's on_configure would
// overwrite the first's settings for every stream (a reload from 0% to 100% and back stayed at 100%,
// because Envoy kept the draining 0% root and never configured it again).
import { ConfigErrors, ConfigObject, readConfigRoot } from "../json/config-reader";
import { ContextTable } from "./context-table";
import { flushMetrics, grpcCall, Logger, metricBatchWaiting, metricTicksNeeded, pluginConfiguration, setTickPeriod } from "./calls";
import { currentContext, resumeRequest, setEffectiveContext } from "./callback-cache";

/** What a headers callback tells Envoy (proxy-wasm ABI 0.2.1 values). */
export enum FilterHeadersStatusValues {
  Continue = 0,
  /**
   * Holds the headers while the body still reaches this filter, when the filter config sets
   * `allow_on_headers_stop_iteration: true`; without it Envoy stops everything instead.
   */
  StopIteration = 1,
  ContinueAndEndStream = 2,
  StopAllIterationAndBuffer = 3,
  StopAllIterationAndWatermark = 4,
}

/** What a body callback tells Envoy (proxy-wasm ABI 0.2.1 values). */
export enum FilterDataStatusValues {
  Continue = 0,
  StopIterationAndBuffer = 1,
  StopIterationAndWatermark = 2,
  StopIterationNoBuffer = 3,
}

/**
 * What roots and streams share: Envoy's id for them, and the gRPC calls they make. Envoy 1.40 answers
 * every call on the root context, whichever context made it, and does not cancel a stream's calls
 * when the stream ends (test/grpc-call.test.ts); abi.ts hands each answer to the context that made
 * the call instead, made the current one, so that a stream's onGrpcReceive can resume its request or
 * answer it like any of its own callbacks. An answer that comes after its stream was deleted reaches
 * nobody: a call whose answer still matters then (a settlement) is made by the root.
 */
export abstract class HostContext {
  constructor(public contextId: u32) {}

  /**
   * Starts a unary gRPC call (calls.ts grpcCall says what the arguments are) answered to this
   * context: the token its hooks get, or a negative WasmResult when the host refused the call.
   */
  grpcCall(service: ArrayBuffer, serviceName: ArrayBuffer, method: ArrayBuffer, message: Uint8Array, timeoutMs: u32): i64 {
    const token = grpcCall(service, serviceName, method, message, timeoutMs);
    if (token >= 0) grpcCallers.set(<u32>token, this);
    return token;
  }

  /** The answer to call `token` is here: calls.ts grpcReceived(messageSize) reads it, during this hook only. */
  onGrpcReceive(token: u32, messageSize: u32): void {}

  /**
   * Call `token` ended without an answer: `status` is its gRPC status, which Envoy 1.40 makes 14
   * (UNAVAILABLE) for a timeout and an unreachable service alike; calls.ts grpcStatusMessage()
   * reads the message that tells them apart. The service's own errors keep their status and
   * grpc-message, to which Envoy appends its response details in braces ("...{via_upstream}").
   */
  onGrpcClose(token: u32, status: u32): void {}
}

/** Calls in flight on this VM, by token, and the context each answer goes to. */
const grpcCallers = new Map<u32, HostContext>();

/**
 * The context that made call `token`, made the host's current context, and the call forgotten: a
 * unary call ends with exactly one of proxy_on_grpc_receive and proxy_on_grpc_close. Null for a token
 * not made here, or when the context is gone (a mesh stage shares its id with the mesh's context, so
 * a stage lives as long as that id does).
 */
export function takeGrpcCaller(token: u32): HostContext | null {
  if (!grpcCallers.has(token)) return null;
  const caller = grpcCallers.get(token);
  grpcCallers.delete(token);
  const id = caller.contextId;
  if (streams.get(id) == null && rootContext(id) == null) return null;
  if (id != currentContext()) setEffectiveContext(id);
  return caller;
}

/**
 * One plugin configuration's context on this VM: it holds the parsed configuration, creates the
 * streams that run under it, and gets the ticks it asked for.
 */
export abstract class RootContext extends HostContext {
  abstract createContext(contextId: u32): StreamContext;

  /**
   * Reads the plugin configuration; one that does not parse, or that configure() finds fault with,
   * is refused with a log line naming the field and the reason: Envoy then fails its start, or
   * NACKs the update over xDS.
   */
  onConfigure(configurationSize: u32): bool {
    const errors = new ConfigErrors();
    const source = readConfigRoot(pluginConfiguration(configurationSize), errors);
    if (errors.ok) this.configure(source, errors);
    if (errors.ok) return true;
    new Logger(registeredName).critical(this.contextId, "invalid configuration, refusing to start: " + errors.message);
    return false;
  }

  /** Reads the filter's configuration from its JSON object and, when that adds no error, starts using it. */
  configure(source: ConfigObject, errors: ConfigErrors): void {}

  /**
   * How often this root needs onTick, in milliseconds; 0: not at all. A root declares its need
   * rather than setting the host's period itself: in the one-module build (assembly/mesh/) every
   * stage shares one root, and stages that each set the period would overwrite each other.
   */
  tickPeriodMs(): u32 {
    return 0;
  }

  onTick(): void {}

  private tickPeriodAsked: u32 = 0;

  /**
   * Tells the host the period this root needs now, when it changed: tickPeriodMs(), or the VM's
   * held metric changes' when shorter (calls.ts metricTicksNeeded; abi.ts sends them from the tick).
   * abi.ts asks after a configure is accepted, as every tick begins (so a need that ends stops the
   * ticks at the next one) and after a callback that started a metric batch; a stream whose
   * callback starts a need of the filter's asks through StreamContext.askForTicks.
   */
  askForTicks(): void {
    const own = this.tickPeriodMs();
    const metrics = metricTicksNeeded();
    const period = own == 0 || (metrics != 0 && metrics < own) ? metrics : own;
    if (period == this.tickPeriodAsked) return;
    this.tickPeriodAsked = period;
    setTickPeriod(period);
  }

  /**
   * Envoy was seen keeping the body of a request whose headers were held (host/header-hold.ts):
   * the Wasm filter lacks allow_on_headers_stop_iteration. Called on the root Envoy knows, so that in
   * the one module (assembly/mesh/) every stage stops holding, not only the one that found out.
   */
  headerPauseMissing(): void {}

  /** False would ask Envoy to wait before deleting the root; no llm-mesh root needs that. */
  onDone(): bool {
    return true;
  }

  onDelete(): void {}
}

/**
 * One HTTP stream: request headers, request body (once per chunk Envoy passes on), response
 * headers, response body, then onDone and onLog as the stream ends and onDelete last. A stream
 * answered or reset early skips the callbacks it never reached; onLog still comes.
 */
export class StreamContext extends HostContext {
  readonly rootContextId: u32;
  /** The stream this one runs inside as a stage, in llm-mesh's one-module build (assembly/mesh/). */
  mesh: StreamContext | null = null;

  constructor(contextId: u32, root: RootContext) {
    super(contextId);
    this.rootContextId = root.contextId;
  }

  onRequestHeaders(headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    return FilterDataStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    return FilterDataStatusValues.Continue;
  }

  onDone(): bool {
    return true;
  }

  onLog(): void {}

  onDelete(): void {}

  /** Lets a request this stream paused go on, from a tick: through the later stages first when it runs inside a mesh stream. */
  continueRequest(): void {
    const mesh = this.mesh;
    if (mesh != null) mesh.continueAfter(this);
    else resumeRequest(this.contextId);
  }

  /**
   * From the root's tick (header-hold.ts): the headers this stream holds waiting for a body that has
   * not come go on without it, and the filter decides at body time. Filters that hold override it.
   */
  letGoHeaders(): void {}

  /** A mesh stream runs the stages after `stage` here; a lone filter's stream has none. */
  continueAfter(stage: StreamContext): void {}

  /**
   * This stream's callback may have changed what its root needs ticks for (admission: a request now
   * waits for one): the root Envoy knows, the mesh's one in the one-module build, asks the host again.
   */
  askForTicks(): void {
    const root = rootContext(this.rootContextId);
    if (root != null) root.askForTicks();
  }
}

// ---- registry ----

let rootFactory: ((contextId: u32) => RootContext) | null = null;
/** The root_id the filter is documented under, for its log lines. */
let registeredName = "";
/** Usually one; a few while Envoy drains the roots of replaced configurations. */
const roots = new Array<RootContext>();
const streams = new ContextTable<StreamContext>();

/**
 * Names the filter's root context class; every filter's index.ts calls this once. `name` is the
 * root_id the filter is documented under: Envoy picks the module by its configuration, not by it.
 */
export function registerFilter(factory: (contextId: u32) => RootContext, name: string): void {
  rootFactory = factory;
  registeredName = name;
}

export function rootContext(contextId: u32): RootContext | null {
  for (let i = 0, n = roots.length; i < n; i++) {
    const root = unchecked(roots[i]);
    if (root.contextId == contextId) return root;
  }
  return null;
}

export function streamContext(contextId: u32): StreamContext | null {
  return streams.get(contextId);
}

export function createRoot(contextId: u32): void {
  const factory = rootFactory;
  if (factory == null || rootContext(contextId) != null) return;
  roots.push(factory(contextId));
}

/** Envoy creates streams only under roots it created first; any other id is ignored. */
export function createStream(contextId: u32, rootContextId: u32): void {
  const root = rootContext(rootContextId);
  if (root == null) return;
  streams.add(root.createContext(contextId));
}

/**
 * Forgets a root or a stream and tells it so; nothing when the id is unknown. A root takes the VM's
 * held metric changes to Envoy with it: it may have been the one ticking for them, and a VM being
 * shut down has no later tick.
 */
export function deleteContext(contextId: u32): void {
  const stream = streams.remove(contextId);
  if (stream != null) {
    stream.onDelete();
    askForMetricTicks(stream.rootContextId);
    return;
  }
  for (let i = 0, n = roots.length; i < n; i++) {
    const root = unchecked(roots[i]);
    if (root.contextId != contextId) continue;
    roots.splice(i, 1);
    root.onDelete();
    flushMetrics();
    return;
  }
}

/**
 * After a callback on context `contextId` (a stream's, or a root's): when it started a metric batch,
 * the root it runs under asks for the ticks that send the batch.
 */
export function askForMetricTicks(contextId: u32): void {
  if (!metricBatchWaiting()) return;
  const stream = streams.get(contextId);
  const root = rootContext(stream != null ? stream.rootContextId : contextId);
  if (root != null) root.askForTicks();
}
