// The Envoy processes of a benchmark run: the upstream (envoy/bench-upstream.yaml) and one proxy
// under test per scenario (envoy/bench.yaml), the rate limit service with its Redis when a
// scenario's throttle rule is global, and Jaeger when a scenario traces. Both templates are complete configs on their own (the
// proxy is bare Envoy, the upstream answers briefly), so the harness validates them like every
// scenario; a run starts them with the harness, which applies the scenario's changes to the rendered
// config before Envoy reads it.
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { AUTHORIZATION, CHAT_PATH, jsonAnswer, sseAnswer, type Workload } from "./bodies.ts";
import { repoDir } from "../../tooling/envoy-bin.ts";
import { type EnvoyHandle, startEnvoy } from "../../tooling/envoy.ts";
import { type JaegerHandle } from "../../tooling/jaeger.ts";
import { type RateLimitService, type Redis, startRateLimitService, startRedis } from "../../tooling/ratelimit.ts";
import { envoyRateLimitConfig, type FilterModule, httpFilterEntries, type Scenario } from "./scenarios.ts";

const ROUTER_ENTRY = /^(\s*)- name: envoy\.filters\.http\.router$/m;
const INLINE_ANSWER = /body: \{ inline_string: .* \}(\s+# answer: (json|sse))$/gm;

export interface FrontOptions {
  concurrency?: number;
  /** e.g. "wasm:trace" to log every host call; quiet by default so logging costs nothing. */
  componentLogLevel?: string;
  logLevel?: string;
}

export type RunningEnvoy = EnvoyHandle;

/** What the proxies under test send to: the model upstream, and the rate limit service when one runs. */
export interface Backends {
  upstream: RunningEnvoy;
  /** The service and its Redis, for scenarios whose throttle asks it (envoy/bench.yaml's `ratelimit` cluster). */
  rateLimit?: { service: RateLimitService; redis: Redis };
  /** The OTLP receiver, for scenarios that trace. */
  jaeger?: JaegerHandle;
}

/**
 * Redis and the rate limit service on loopback, as the cluster-wide budget tests run them, with a
 * limit in its config for the descriptor Envoy's own rate limit filter sends (envoy-ratelimit).
 */
export async function startRateLimitBackend(domain: string): Promise<NonNullable<Backends["rateLimit"]>> {
  const redis = await startRedis();
  try {
    return { redis, service: await startRateLimitService({ redis, domain, config: envoyRateLimitConfig(domain) }) };
  } catch (err) {
    await redis.stop();
    throw err;
  }
}

/** An Envoy of the benchmark from envoy/<scenario>.yaml: one worker, logging only warnings unless told. */
export const launch = (scenario: string, vars: Record<string, number>, edit: (yaml: string) => string = (yaml) => yaml, options: FrontOptions = {}) =>
  startEnvoy({
    scenario,
    vars,
    edit,
    concurrency: options.concurrency ?? 1,
    logLevel: options.logLevel ?? "warning",
    componentLogLevel: options.componentLogLevel ?? "",
    readyTimeoutMs: 30_000,
  });

/** The upstream, answering with the benchmark's full chat completion and SSE stream, written into `dir`. */
export function startUpstream(dir: string): Promise<RunningEnvoy> {
  const files: Record<string, string> = { json: join(dir, "answer.json"), sse: join(dir, "answer.sse") };
  writeFileSync(files.json, jsonAnswer());
  writeFileSync(files.sse, sseAnswer());
  const answers = (yaml: string) => yaml.replace(INLINE_ANSWER, (_, tail: string, kind: string) => `body: { filename: ${JSON.stringify(files[kind])} }${tail}`);
  return launch("bench-upstream", {}, answers, {});
}

/**
 * The proxy's config with envoy/tracing.yaml's tracer (its gateway listener's: sampler, and custom
 * tags if asked) and its OTLP cluster, but Envoy's default span batching, as a production proxy has.
 */
function withTracing(yaml: string, tracing: NonNullable<Scenario["tracing"]>, otlpPort: number): string {
  const template = readFileSync(join(repoDir, "envoy", "tracing.yaml"), "utf8")
    .replaceAll("{{SAMPLING}}", String(tracing.sampling))
    .replaceAll("{{OTLP_PORT}}", String(otlpPort))
    .replace(/\{\{[A-Z_]+\}\}/g, "0");
  const source = parse(template).static_resources;
  const config = parse(yaml);
  const hcm = (listeners: any[]) => listeners[0].filter_chains[0].filters[0].typed_config;
  const { custom_tags, ...withoutTags } = hcm(source.listeners).tracing;
  hcm(config.static_resources.listeners).tracing = tracing.tags ? { ...withoutTags, custom_tags } : withoutTags;
  config.static_resources.clusters.push(source.clusters.find((c: { name: string }) => c.name === "otlp"));
  return stringify(config, { aliasDuplicateObjects: false });
}

/**
 * A proxy with the scenario's filters before the router, in front of the upstream. Without a rate
 * limit service its `ratelimit` cluster points at a free port nothing listens on.
 */
export function startFront(scenario: Scenario, modules: FilterModule[], backends: Backends, options: FrontOptions = {}): Promise<RunningEnvoy> {
  const tracing = scenario.tracing;
  if (tracing && !backends.jaeger) throw new Error(`scenario ${scenario.id} traces, but no tracing backend runs`);
  const withFilters = (yaml: string) => {
    const router = ROUTER_ENTRY.exec(yaml);
    if (!router) throw new Error("envoy/bench.yaml: no '- name: envoy.filters.http.router' entry to put the filters before");
    // JSON objects are YAML flow mappings: each filter becomes one list item at the router's indent.
    const entries = httpFilterEntries(scenario.chain, modules).map((entry) => `${router[1]}- ${JSON.stringify(entry)}\n`);
    const chained = yaml.slice(0, router.index) + entries.join("") + yaml.slice(router.index);
    return tracing ? withTracing(chained, tracing, backends.jaeger!.otlpPort) : chained;
  };
  const vars: Record<string, number> = { UPSTREAM_PORT: backends.upstream.ports.LISTEN_PORT };
  if (backends.rateLimit) vars.RLS_PORT = backends.rateLimit.service.grpcPort;
  return launch("bench", vars, withFilters, options);
}

/** Stops an Envoy and removes its scratch directory (config and log), which tests keep for failures. */
export async function stopEnvoy(envoy: RunningEnvoy): Promise<void> {
  await envoy.stop();
  rmSync(envoy.tmpDir, { recursive: true, force: true });
}

/** A proxy under test: an Envoy, or a peer that serves the same API (scripts/bench/peers.ts). */
export type Reachable = Pick<RunningEnvoy, "url">;

const chatUrl = (front: Reachable) => front.url(CHAT_PATH);
const answerHeader = (w: Workload) => (w.stream ? "sse" : "");
/** What wrk needs to send the workload (its body written to `bodyFile`) through the proxy. */
export const workloadTarget = (front: Reachable, w: Workload, bodyFile: string) => ({ url: chatUrl(front), bodyFile, answer: answerHeader(w) });

/**
 * One request of the workload through the proxy, checked: a benchmark of rejected requests would
 * measure the filters' error path, not their cost on real traffic. Returns why it is unfit, or null.
 */
export async function checkOnce(front: Reachable, w: Workload): Promise<string | null> {
  const headers: Record<string, string> = { "content-type": "application/json", authorization: AUTHORIZATION };
  if (w.stream) headers["x-bench-answer"] = "sse";
  let res: Response;
  try {
    res = await fetch(chatUrl(front), { method: "POST", headers, body: w.body, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    return `request failed: ${(err as Error).message}`;
  }
  const text = await res.text();
  const type = res.headers.get("content-type") ?? "";
  const expected = w.stream ? "text/event-stream" : "application/json";
  if (res.status !== 200) return `status ${res.status}: ${text.slice(0, 300)}`;
  if (!type.startsWith(expected)) return `content-type ${type}, expected ${expected}`;
  if (w.stream ? !text.endsWith("data: [DONE]\n\n") : !text.includes('"chat.completion"')) return "the answer arrived incomplete";
  return null;
}
