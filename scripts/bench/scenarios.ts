// What the benchmark compares: which filter modules exist (build/*.wasm), with which configuration,
// and the filter chains built from them, written as the Envoy http_filters list of envoy/bench.yaml.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { repoDir } from "../../tooling/envoy-bin.ts";
import { STAGES, wasmHttpFilter } from "../../tooling/one-module.ts";

/** The filter that publishes request facts; later filters read those instead of the body. */
export const FIRST_FILTER = "admission";

const benchDir = fileURLToPath(new URL(".", import.meta.url));
const benchConfigDir = join(benchDir, "configs");
const pluginConfigDir = join(repoDir, "envoy", "plugin-config");

export interface FilterModule {
  name: string;
  /** The root id the module registers (llm-<name> for llm-mesh filters). */
  rootId: string;
  file: string;
  bytes: number;
  /** The plugin configuration (JSON text) the benchmark gives it. */
  config: string;
  /** Where that configuration came from, relative to the repository. */
  configSource: string;
  /** Its configuration asks the rate limit service (envoy/bench.yaml's `ratelimit` cluster). */
  asksRateLimitService?: boolean;
  /** An Envoy filter of its own instead of a Wasm module: its http_filters entry. */
  envoyFilter?: object;
}

/** The module that runs every filter as a stage of one (assembly/mesh/), configured with their configurations as sections. */
export const ONE_MODULE = "mesh";
/** The one module again, without the optional per-request output that costs host calls. */
export const ONE_MODULE_LEAN = "mesh-lean";
/** llm-throttle with its rule counted by the rate limit service instead of shared data: what a global reservation costs. */
export const GLOBAL_THROTTLE = "throttle-global";
/** Envoy's own rate limit filter asking the same service once per request: what any such call costs Envoy. */
export const ENVOY_RATELIMIT = "envoy-ratelimit";
/** Its one descriptor's value. */
const ENVOY_RATELIMIT_KEY = "bench";
/** The service's config: `domain`, and a limit for that descriptor (the filter sends none of its own). */
export const envoyRateLimitConfig = (domain: string) =>
  `domain: ${domain}\ndescriptors:\n- key: generic_key\n  value: ${ENVOY_RATELIMIT_KEY}\n  rate_limit: { unit: second, requests_per_unit: 1000000000 }\n`;

/**
 * Envoy's rate limit filter (envoy.filters.http.ratelimit) with a descriptor of its own, asking the
 * `ratelimit` cluster in `domain`: one ShouldRateLimit per request, one counter in Redis, the floor
 * against which a Wasm filter's global reservation is judged.
 */
export function envoyRateLimitReference(domain: string): FilterModule {
  const filter = {
    name: "envoy.filters.http.ratelimit",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
      domain,
      timeout: "0.1s",
      rate_limits: [{ actions: [{ generic_key: { descriptor_value: ENVOY_RATELIMIT_KEY } }] }],
      rate_limit_service: { grpc_service: { envoy_grpc: { cluster_name: "ratelimit" } }, transport_api_version: "V3" },
    },
  };
  return { name: ENVOY_RATELIMIT, rootId: "", file: "", bytes: 0, config: "", configSource: "envoy.filters.http.ratelimit", asksRateLimitService: true, envoyFilter: filter };
}
/**
 * What mesh-lean turns off, per section: the x-llm-* and x-ratelimit-* headers, the access-log
 * records, and the llm_mesh.* filter state (the stages still share it inside the module).
 */
const LEAN_OPTIONS: Record<string, object> = {
  admission: { forward_headers: false, filter_state: false },
  throttle: { response_headers: false, filter_state: false },
  metrics: { records: false },
  router: { filter_state: false },
};

/**
 * Every filter module in build/ (not kernels.wasm, which is for Node), in the recommended order;
 * the one-module build configured with the same configurations, when it is built; and variants of a
 * filter with another configuration, measured alone (throttle-global).
 */
export function discoverFilters(buildDir = join(repoDir, "build")): { filters: FilterModule[]; meshes: FilterModule[]; variants: FilterModule[]; skipped: string[] } {
  if (!existsSync(buildDir)) return { filters: [], meshes: [], variants: [], skipped: ["every filter: build/ does not exist (run npm run build)"] };
  const names = readdirSync(buildDir)
    .filter((f) => f.endsWith(".wasm") && f !== "kernels.wasm" && f !== `${ONE_MODULE}.wasm`)
    .map((f) => f.slice(0, -".wasm".length));
  const rank = (n: string) => (STAGES.includes(n) ? STAGES.indexOf(n) : STAGES.length);
  names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const filters: FilterModule[] = [];
  const skipped: string[] = [];
  for (const name of names) {
    // A bench-specific configuration keeps the filter on its normal path under benchmark traffic
    // (limits that admit every benchmark request, one upstream cluster); else the scenario default.
    const candidates = [join(benchConfigDir, `${name}.json`), join(pluginConfigDir, `${name}.json`)];
    const source = candidates.find((f) => existsSync(f));
    if (!source) {
      skipped.push(`${name}: no configuration (looked for ${candidates.map((c) => c.replace(repoDir + "/", "")).join(", ")})`);
      continue;
    }
    const file = join(buildDir, `${name}.wasm`);
    filters.push({
      name,
      rootId: `llm-${name}`,
      file,
      bytes: statSync(file).size,
      config: JSON.stringify(JSON.parse(readFileSync(source, "utf8"))),
      configSource: source.replace(repoDir + "/", ""),
    });
  }
  const throttle = filters.find((f) => f.name === "throttle");
  const globalSource = join(benchConfigDir, `${GLOBAL_THROTTLE}.json`);
  const variants = throttle
    ? [{ ...throttle, name: GLOBAL_THROTTLE, config: JSON.stringify(JSON.parse(readFileSync(globalSource, "utf8"))), configSource: globalSource.replace(repoDir + "/", ""), asksRateLimitService: true }]
    : [];
  const meshFile = join(buildDir, `${ONE_MODULE}.wasm`);
  if (!existsSync(meshFile) || filters.length < 2) return { filters, meshes: [], variants, skipped };
  const sections = Object.fromEntries(filters.map((f) => [f.name, JSON.parse(f.config)]));
  const lean = Object.fromEntries(Object.entries(sections).map(([name, config]) => [name, { ...config, ...LEAN_OPTIONS[name] }]));
  const filterNames = filters.map((f) => f.name).join(", ");
  const meshModule = (name: string, config: object, configSource: string): FilterModule =>
    ({ name, rootId: `llm-${ONE_MODULE}`, file: meshFile, bytes: statSync(meshFile).size, config: JSON.stringify(config), configSource });
  const meshes = [
    meshModule(ONE_MODULE, sections, `the configurations above as sections (${filterNames})`),
    meshModule(ONE_MODULE_LEAN, lean, `as ${ONE_MODULE}, with ${Object.entries(LEAN_OPTIONS).map(([n, o]) => `${n} ${JSON.stringify(o)}`).join(", ")}`),
  ];
  return { filters, meshes, variants, skipped };
}

export type ScenarioKind = "baseline" | "reference" | "alone" | "chain" | "scan" | "tracing";

export interface Scenario {
  id: string;
  /** Filter names in chain order; a name may repeat (a second instance of the same filter). */
  chain: string[];
  kind: ScenarioKind;
  /** Only these workloads (all when absent). */
  workloads?: string[];
  /**
   * Envoy's OpenTelemetry tracer on, as envoy/tracing.yaml has it (its sampler, and its custom tags
   * unless `tags` is false), keeping `sampling` % of the traces that start at the proxy; the spans
   * go to the run's Jaeger.
   */
  tracing?: { sampling: number; tags: boolean };
}

export const BARE = "bare";
export const ALL = "all";
export const RAW_REFERENCE = "wasm-raw";
export const rawChainId = (count: number) => `${RAW_REFERENCE}-x${count}`;

/**
 * Bare Envoy, each filter alone, all of them chained, and the pairs that show the body is scanned
 * once: a later filter alone must read the body itself, after admission it reads the facts. With
 * no later filter built yet, admission twice shows what a second scan of the body would cost.
 */
export function buildScenarios(filters: FilterModule[], references: FilterModule[], scanWorkloads: string[], meshes: FilterModule[] = [], variants: FilterModule[] = []): Scenario[] {
  const names = filters.map((f) => f.name);
  const scenarios: Scenario[] = [{ id: BARE, chain: [], kind: "baseline" }];
  for (const ref of references) scenarios.push({ id: ref.name, chain: [ref.name], kind: "reference" });
  // As many do-nothing filters as the full chain has: Envoy's own share of the chain's cost.
  if (names.length > 1 && references.some((r) => r.name === RAW_REFERENCE)) {
    scenarios.push({ id: rawChainId(names.length), chain: names.map(() => RAW_REFERENCE), kind: "reference" });
  }
  for (const name of names) scenarios.push({ id: name, chain: [name], kind: "alone" });
  for (const variant of variants) scenarios.push({ id: variant.name, chain: [variant.name], kind: "alone" });
  if (names.length > 1) scenarios.push({ id: ALL, chain: names, kind: "chain" });
  for (const mesh of meshes) scenarios.push({ id: mesh.name, chain: [mesh.name], kind: "chain" });
  if (names.includes(FIRST_FILTER)) {
    const later = names.filter((n) => n !== FIRST_FILTER);
    // The full chain already shows a pair when there are only two filters.
    const pairs = later.length === 1 ? [] : later.map((n) => [FIRST_FILTER, n]);
    if (later.length === 0) pairs.push([FIRST_FILTER, FIRST_FILTER]);
    for (const chain of pairs) scenarios.push({ id: chain.join("+"), chain, kind: "scan", workloads: scanWorkloads });
  }
  return scenarios;
}

export const tracingId = (sampling: number, tags = true) => `${ALL}+tracing-${sampling}${tags ? "" : "-untagged"}`;

/**
 * The chain of every filter with tracing on: every request traced, and none (what the tracer costs
 * when it is there but samples nothing); every request traced without llm-mesh's custom tags
 * splits the first into Envoy's span and the tags.
 */
export function tracingScenarios(all: Scenario, workloads: string[]): Scenario[] {
  const variants: Array<[number, boolean]> = [[100, true], [0, true], [100, false]];
  return variants.map(([sampling, tags]) => ({ id: tracingId(sampling, tags), chain: all.chain, kind: "tracing", workloads, tracing: { sampling, tags } }));
}

/**
 * The reference filters, compiled into `dir`: the smallest module Envoy runs (reference-raw.wat,
 * hand-written), and a filter on llm-mesh's own proxy-wasm layer that does nothing or only reads the
 * body (both reference-filter.ts): the floors an llm-mesh filter's cost is compared with.
 */
export function buildReferenceFilters(dir: string, callKinds: string[] = []): { references: FilterModule[]; skipped: string[] } {
  const bin = (tool: string) => join(repoDir, "node_modules", ".bin", tool);
  const quiet = { cwd: repoDir, stdio: ["ignore", "ignore", "pipe"] as ("ignore" | "pipe")[] };
  const references: FilterModule[] = [];
  const skipped: string[] = [];
  const raw = join(dir, "reference-raw.wasm");
  execFileSync(bin("wasm-as"), [join(benchDir, "reference-raw.wat"), "-o", raw], quiet);
  references.push({ name: RAW_REFERENCE, rootId: "llm-reference-raw", file: raw, bytes: statSync(raw).size, config: "", configSource: "scripts/bench/reference-raw.wat" });
  const file = join(dir, "reference.wasm");
  const source = "scripts/bench/reference-filter.ts";
  try {
    execFileSync(bin("asc"), [join(benchDir, "reference-filter.ts"), "--config", "asconfig.json", "--target", "release", "--outFile", file], quiet);
  } catch (err) {
    // It builds on assembly/host/abi.ts like every filter; while that is mid-change, run without it.
    const stderr = String((err as { stderr?: Buffer }).stderr ?? err).trim().split("\n").slice(0, 3).join(" ");
    skipped.push(`wasm-pass, wasm-read-body: ${source} does not compile: ${stderr}`);
    return { references, skipped };
  }
  const bytes = statSync(file).size;
  references.push(
    { name: "wasm-pass", rootId: "llm-reference", file, bytes, config: "pass", configSource: source },
    { name: "wasm-read-body", rootId: "llm-reference", file, bytes, config: "read-body", configSource: source },
    ...callKinds.map((kind) => ({ name: `${HOST_CALL_PREFIX}${kind}`, rootId: "llm-reference", file, bytes, config: `calls:${kind}:${HOST_CALL_REPEAT}`, configSource: source })),
  );
  return { references, skipped };
}

/** The host calls `--host-call-costs` times, each repeated HOST_CALL_REPEAT times per request (reference-filter.ts). */
export const HOST_CALL_KINDS = [
  "header-get", "header-get-absent", "header-pairs", "header-set", "header-set-pairs", "header-remove", "state-set", "state-get", "property-get",
  "shared-get", "shared-set", "metric-increment", "metric-record", "time",
];
export const HOST_CALL_REPEAT = 20;
export const HOST_CALL_PREFIX = "call-";

/** The http_filters entries (Envoy JSON) of a chain's filters; the router follows them. */
export function httpFilterEntries(chain: string[], filters: FilterModule[]): object[] {
  const seen = new Map<string, number>();
  return chain.map((name) => {
    const module = filters.find((f) => f.name === name);
    if (!module) throw new Error(`no module for filter ${name}`);
    if (module.envoyFilter) return module.envoyFilter;
    const count = (seen.get(name) ?? 0) + 1;
    seen.set(name, count);
    // A repeated filter needs its own Envoy filter name; root_id stays the one the module registers.
    const filterName = count === 1 ? module.rootId : `${module.rootId}-${count}`;
    return wasmHttpFilter(filterName, module.rootId, module.config, module.file);
  });
}
