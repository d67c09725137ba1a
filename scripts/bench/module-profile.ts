// `tsx scripts/bench/module-profile.ts [--scenario mesh|mesh-lean] [--workload 1k|16k|128k] [--ms N]`:
// where the one module's own code spends a request, function by function. Inside Envoy that split
// is out of reach (Envoy's binary is stripped and V8 writes no symbol map there; `perf` sees one
// block of generated code), so this runs build/mesh.wasm, built again with its names kept, in
// Node's V8 (the engine Envoy embeds) and drives it through the callbacks Envoy makes for one
// request, its host calls answered by the in-memory host (tooling/in-memory-host.ts) from fixed
// data: the benchmark's request and answer, the headers wrk and Envoy send, status 200. It measures the module's code only: what the host side of
// each call costs is Envoy's, measured by `npm run bench` (`--host-call-costs`) in the real Envoy.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { repoDir } from "../../tooling/envoy-bin.ts";
import { type HeaderList, InMemoryHost } from "../../tooling/in-memory-host.ts";
import { AUTHORIZATION, jsonAnswer, workloads } from "./bodies.ts";
import { timeCalls } from "./kernels.ts";
import { namedReleaseBuild } from "./named-build.ts";
import { discoverFilters } from "./scenarios.ts";
import { sampleWasm } from "./wasm-samples.ts";

export interface ModuleDriver {
  /** One request through every callback Envoy makes for it, in Envoy's order. */
  request(): void;
  /** Host calls the module made since the last reset, by ABI name. */
  hostCalls: Map<string, number>;
}

const TICK_EVERY = 200;

/** Instantiates a module, configures it as Envoy would and returns a driver for requests. */
export async function driveModule(wasm: BufferSource, configuration: string, requestBody: string, answer: string): Promise<ModuleDriver> {
  const host = new InMemoryHost({ wallClock: true });
  const worker = await host.startWorker(wasm);
  const root = worker.configure(configuration);

  const encoder = new TextEncoder();
  const body = encoder.encode(requestBody);
  const answerBytes = encoder.encode(answer);
  const none = new Uint8Array(0);
  const requestHeaders: HeaderList = [[":authority", "127.0.0.1:10000"], [":path", "/v1/chat/completions"], [":method", "POST"], [":scheme", "http"],
    ["content-length", String(body.length)], ["content-type", "application/json"], ["authorization", AUTHORIZATION],
    ["x-forwarded-proto", "http"], ["x-request-id", "4b1ef7a2-5f7e-4d6f-9e55-2f6a0a0c1d11"]];
  const responseHeaders: HeaderList = [[":status", "200"], ["content-type", "application/json"], ["content-length", String(answerBytes.length)],
    ["date", "Sun, 29 Nov 2026 14:00:00 GMT"], ["server", "envoy"], ["x-envoy-upstream-service-time", "0"]];

  function request(): void {
    const stream = root.stream({ headers: requestHeaders });
    stream.sendRequestHeaders(false);
    // The body arrives, the module holds it, and Envoy hands over the whole buffer at its end.
    stream.sendRequestBody(body, false);
    stream.sendRequestBody(none, true);
    if (stream.localResponse) throw new Error(`the module answered a benchmark request itself (${stream.localResponse.status}): its configuration does not admit the benchmark traffic`);
    if (!stream.forwarded) throw new Error("the module did not let a benchmark request through");
    stream.sendResponseHeaders(responseHeaders, false);
    stream.sendResponseBody(answerBytes, false);
    stream.sendResponseBody(none, true);
    stream.close();
    if (stream.id % TICK_EVERY === 0) root.tick();
  }
  return { request, hostCalls: worker.hostCalls };
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
