// Runs Jaeger v2 (built by scripts/setup-tracing.sh) on loopback as the tracing backend of the tests:
// an OTLP/gRPC receiver Envoy's OpenTelemetry tracer sends to, in-memory storage, and the query HTTP
// API the tests read spans back from, exactly as Jaeger's UI would show them.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { stringify } from "yaml";
import { repoDir } from "./envoy-bin.ts";
import { freePorts } from "./envoy.ts";
import { answers, Process } from "./process.ts";

/** One span as Jaeger stored it. Attribute values are Jaeger's, as text. */
export interface Span {
  traceId: string;
  spanId: string;
  /** The span this one is a child of, "" for a trace's root. */
  parentSpanId: string;
  service: string;
  name: string;
  attributes: Record<string, string>;
}

export interface JaegerHandle {
  pid: number;
  /** Where Envoy's OpenTelemetry tracer sends spans (OTLP over gRPC). */
  otlpPort: number;
  /** The spans of the service's recent traces (up to `limit` traces), newest trace first. */
  spansOf(service: string, limit?: number): Promise<Span[]>;
  /** The spans of one trace; [] while Jaeger has none of it. */
  trace(traceId: string): Promise<Span[]>;
  /** Polls `read` until `accept` holds; throws with the last answer when it never does. */
  waitFor(read: () => Promise<Span[]>, accept: (spans: Span[]) => boolean, timeoutMs?: number): Promise<Span[]>;
  stop(): Promise<void>;
}

/** The binary scripts/setup-tracing.sh built, or JAEGER_BIN. */
export function jaegerBinary(): string {
  const bin = process.env.JAEGER_BIN ?? join(repoDir, ".tracing", "bin", "jaeger");
  if (!existsSync(bin)) throw new Error(`Jaeger not built (${bin} missing): run \`npm run setup:tracing\` or set JAEGER_BIN`);
  return bin;
}

/**
 * The smallest all-in-one: an OTLP/gRPC receiver straight into memory (no batch processor, so a span
 * is queryable as soon as it arrives), the query API, and no listener of Jaeger's fixed default ports
 * (its own metrics are off; everything else is on the ports given).
 */
function configYaml(ports: { otlp: number; http: number; grpc: number }, otlpAddress: string): string {
  return stringify({
    service: {
      extensions: ["jaeger_storage", "jaeger_query"],
      pipelines: { traces: { receivers: ["otlp"], exporters: ["jaeger_storage_exporter"] } },
      telemetry: { metrics: { level: "none" }, logs: { level: "warn" } },
    },
    extensions: {
      jaeger_storage: { backends: { memory: { memory: { max_traces: 10000 } } } },
      jaeger_query: {
        storage: { traces: "memory" },
        http: { endpoint: `127.0.0.1:${ports.http}` },
        grpc: { endpoint: `127.0.0.1:${ports.grpc}` },
      },
    },
    receivers: { otlp: { protocols: { grpc: { endpoint: `${otlpAddress}:${ports.otlp}` } } } },
    exporters: { jaeger_storage_exporter: { trace_storage: "memory" } },
  });
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ port, host });
    socket.once("connect", () => (socket.destroy(), done(true)));
    socket.once("error", () => done(false));
  });
}

interface JaegerTrace {
  traceID: string;
  spans: Array<{
    spanID: string;
    operationName: string;
    processID: string;
    references?: Array<{ refType: string; spanID: string }>;
    tags?: Array<{ key: string; value: unknown }>;
  }>;
  processes: Record<string, { serviceName: string }>;
}

function spansOfTraces(traces: JaegerTrace[]): Span[] {
  return traces.flatMap((trace) =>
    trace.spans.map((s) => ({
      traceId: trace.traceID,
      spanId: s.spanID,
      parentSpanId: s.references?.find((r) => r.refType === "CHILD_OF")?.spanID ?? "",
      service: trace.processes[s.processID]?.serviceName ?? "",
      name: s.operationName,
      attributes: Object.fromEntries((s.tags ?? []).map((t) => [t.key, String(t.value)])),
    })),
  );
}

/**
 * `otlpAddress`: where the OTLP receiver listens, loopback unless a test's pod network must reach it
 * (the query API stays on loopback).
 */
export async function startJaeger(options: { readyTimeoutMs?: number; otlpAddress?: string } = {}): Promise<JaegerHandle> {
  const bin = jaegerBinary();
  const otlpAddress = options.otlpAddress ?? "127.0.0.1";
  const tmpRoot = join(repoDir, ".tmp");
  mkdirSync(tmpRoot, { recursive: true });
  const dir = mkdtempSync(join(tmpRoot, "jaeger-"));
  const [otlp, http, grpc] = await freePorts(3);
  const configPath = join(dir, "jaeger.yaml");
  writeFileSync(configPath, configYaml({ otlp, http, grpc }, otlpAddress));

  // Killed with the test process even on SIGKILL, as the Envoy harness does.
  const jaeger = new Process("jaeger", spawn("setpriv", ["--pdeathsig", "KILL", bin, "--config", `file:${configPath}`], { stdio: ["ignore", "pipe", "pipe"] }), join(dir, "jaeger.log"));
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await jaeger.stop();
      if (!process.env.KEEP_TMP) rmSync(dir, { recursive: true, force: true });
    })());

  const queryUrl = `http://127.0.0.1:${http}`;
  async function query(path: string): Promise<JaegerTrace[]> {
    const res = await fetch(`${queryUrl}${path}`);
    // A trace Jaeger has not (yet) received is a 404, not an error of the test.
    if (res.status === 404) return (await res.text(), []);
    const body = (await res.json()) as { data?: JaegerTrace[]; errors?: unknown };
    if (!res.ok || !Array.isArray(body.data)) throw new Error(`Jaeger ${path}: ${res.status} ${JSON.stringify(body.errors ?? body)}`);
    return body.data;
  }

  const handle: JaegerHandle = {
    pid: jaeger.child.pid ?? -1,
    otlpPort: otlp,
    async spansOf(service, limit = 100) {
      return spansOfTraces(await query(`/api/traces?${new URLSearchParams({ service, limit: String(limit), lookback: "1h" })}`));
    },
    async trace(traceId) {
      return spansOfTraces(await query(`/api/traces/${traceId}`));
    },
    async waitFor(read, accept, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        const spans = await read();
        if (accept(spans)) return spans;
        if (Date.now() > deadline) throw new Error(`Jaeger never held the spans expected in ${timeoutMs} ms; it has:\n${JSON.stringify(spans, null, 1)}`);
        await sleep(100);
      }
    },
    stop,
  };

  // Extensions (the query API) start before receivers: ready means both answer.
  try {
    await jaeger.waitUntil("query API and OTLP receiver", async () => (await answers(`${queryUrl}/api/services`)) && accepts(otlpAddress, otlp), options.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return handle;
}
