// Turns the raw samples of a run into medians, ratios to bare Envoy, verdicts against the targets,
// and the Markdown report (bench-results/<name>.md) that docs/benchmarks.md cites.
import { type HostCallCount } from "./hostcalls.ts";
import { type KernelResult, type ProfileEntry } from "./kernels.ts";
import { type ModuleProfile } from "./module-profile.ts";
import { type MemoryResult } from "./memory.ts";
import { CODE_HOMES, type CpuSplit } from "./perf.ts";
import { type ModuleSizes } from "./sizes.ts";
import { ALL, BARE, ENVOY_RATELIMIT, FIRST_FILTER, type FilterModule, GLOBAL_THROTTLE, HOST_CALL_PREFIX, HOST_CALL_REPEAT, ONE_MODULE, ONE_MODULE_LEAN, rawChainId, type Scenario } from "./scenarios.ts";

export const TARGETS = {
  /** Proxy CPU per 1 KB request, as a multiple of bare Envoy's in the same run, per scenario. */
  maxCpuRatio1k: { all: 2.2, mesh: 1.7, "mesh-lean": 1.5 } as Record<string, number>,
  /** The one module adds at most this to a lone 16 KB request's p50 over bare Envoy (ms). */
  maxAddedP50Ms16k: 0.15,
  /** admission's whole body scan (the scanRequest kernel in V8) at least this fast at 16 KB and 128 KB. */
  minScanMBps: 400,
  /** Each single-filter release module at most this many bytes. */
  maxModuleBytes: 64 * 1024,
  /** The one module (build/mesh.wasm) at most this many bytes. */
  maxOneModuleBytes: 100 * 1024,
  /** Calls from the VM to Envoy per 1 KB request through the lean one module. */
  maxHostCallsLean: 20,
  /** A global reservation (throttle-global) adds at most this to a lone 1 KB request's p50 over the local limiter (ms). */
  maxAddedGlobalP50Ms: 0.5,
};

export interface LoadSample {
  rps: number;
  p50Us: number;
  p99Us: number;
  /** The proxy's CPU time per request (all threads), microseconds. */
  cpuUsPerRequest: number;
  /** CPU per request of the services the proxy calls on every request, when it calls any (peers.ts). */
  sideCpuUsPerRequest?: number;
  /** Share of one core the proxy and the upstream used during the run: near 1.0 means saturated. */
  frontBusy: number;
  upstreamBusy: number;
  requests: number;
}

export interface LoneSample {
  p50Us: number;
  p99Us: number;
  requests: number;
}

export interface Cell {
  scenario: string;
  workload: string;
  load: LoadSample[];
  lone: LoneSample[];
  /** Why the cell was not measured (the check request failed), if it was not. */
  problem?: string;
}

export interface CellSummary {
  scenario: string;
  workload: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerRequest: number;
  sideCpuUsPerRequest?: number;
  frontBusy: number;
  upstreamBusy: number;
  loneP50Ms: number;
  loneP99Ms: number;
  /** Ratios to bare Envoy on the same workload in this run (undefined for bare itself). */
  vsBare?: { rps: number; p50: number; p99: number; cpu: number; loneP50: number; loneP99: number; addedLoneP50Ms: number; addedCpuUs: number };
  /** Spread of requests/s across repetitions: (max - min) / median. */
  rpsSpread: number;
}

export interface ScanOnceRow {
  filter: string;
  workload: string;
  /** Extra proxy CPU per request when the filter runs alone and must read the body itself. */
  aloneCpuUs: number;
  /** Extra proxy CPU per request when it runs after admission and can read the published facts. */
  afterFirstCpuUs: number;
  /** The same in p50 latency of a lone request, ms. */
  aloneLatencyMs: number;
  afterFirstLatencyMs: number;
}

export interface Verdict {
  target: string;
  measured: string;
  met: boolean | null;
}

export interface Report {
  meta: Record<string, unknown>;
  settings: Record<string, unknown>;
  modules: { name: string; bytes: number; configSource: string }[];
  skippedFilters: string[];
  scenarios: Scenario[];
  workloads: { id: string; description: string; bytes: number }[];
  cells: Cell[];
  summary: CellSummary[];
  scanOnce: ScanOnceRow[];
  memory: MemoryResult[];
  memoryWorkers: number;
  hostCalls: HostCallCount[];
  cpuSplits: CpuSplit[];
  /** Why there is no CPU split, when there is none. */
  cpuSplitMissing: string;
  kernels: KernelResult[];
  kernelsMissing: string[];
  profile: ProfileEntry[];
  /** The one module's own code per request, function by function, in V8 (module-profile.ts). */
  moduleProfiles: ({ scenario: string; workload: string } & ModuleProfile)[];
  sizes: ModuleSizes[];
  verdicts: Verdict[];
  /** What Envoy's tracer adds to the full chain, per sampling and workload. */
  tracing: TracingRow[];
  /** Spans the traced proxies sent and dropped during the run (Envoy's tracing.opentelemetry stats). */
  tracingSpans: { scenario: string; sent: number; dropped: number }[];
  /** Why the tracing scenarios did not run, when they did not. */
  tracingMissing: string;
  notes: string;
}

export interface TracingRow {
  scenario: string;
  sampling: number;
  tags: boolean;
  workload: string;
  /** Over the same chain without tracing: proxy CPU per request, p50 of a lone request, req/s ratio. */
  addedCpuUs: number;
  addedLoneP50Ms: number;
  rpsRatio: number;
}

const median = (values: number[]) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

export function summarize(cells: Cell[]): CellSummary[] {
  const summaries: CellSummary[] = [];
  for (const cell of cells) {
    if (cell.problem || cell.load.length === 0) continue;
    const rpsValues = cell.load.map((s) => s.rps);
    const side = cell.load.flatMap((s) => (s.sideCpuUsPerRequest === undefined ? [] : [s.sideCpuUsPerRequest]));
    summaries.push({
      scenario: cell.scenario,
      workload: cell.workload,
      rps: median(rpsValues),
      p50Ms: median(cell.load.map((s) => s.p50Us)) / 1000,
      p99Ms: median(cell.load.map((s) => s.p99Us)) / 1000,
      cpuUsPerRequest: median(cell.load.map((s) => s.cpuUsPerRequest)),
      ...(side.length > 0 ? { sideCpuUsPerRequest: median(side) } : {}),
      frontBusy: median(cell.load.map((s) => s.frontBusy)),
      upstreamBusy: median(cell.load.map((s) => s.upstreamBusy)),
      loneP50Ms: median(cell.lone.map((s) => s.p50Us)) / 1000,
      loneP99Ms: median(cell.lone.map((s) => s.p99Us)) / 1000,
      rpsSpread: (Math.max(...rpsValues) - Math.min(...rpsValues)) / median(rpsValues),
    });
  }
  for (const s of summaries) {
    const bare = summaries.find((b) => b.scenario === BARE && b.workload === s.workload);
    if (!bare || s.scenario === BARE) continue;
    s.vsBare = {
      rps: s.rps / bare.rps,
      p50: s.p50Ms / bare.p50Ms,
      p99: s.p99Ms / bare.p99Ms,
      cpu: s.cpuUsPerRequest / bare.cpuUsPerRequest,
      loneP50: s.loneP50Ms / bare.loneP50Ms,
      loneP99: s.loneP99Ms / bare.loneP99Ms,
      addedLoneP50Ms: s.loneP50Ms - bare.loneP50Ms,
      addedCpuUs: s.cpuUsPerRequest - bare.cpuUsPerRequest,
    };
  }
  return summaries;
}

/** Each later filter's own cost alone vs after admission, from the alone and pair scenarios. */
export function scanOnce(summary: CellSummary[], scenarios: Scenario[]): ScanOnceRow[] {
  const get = (scenario: string, workload: string) => summary.find((s) => s.scenario === scenario && s.workload === workload);
  const rows: ScanOnceRow[] = [];
  for (const pair of scenarios.filter((s) => s.chain.length === 2 && s.chain[0] === FIRST_FILTER)) {
    const later = pair.chain[1];
    for (const workload of new Set(summary.filter((s) => s.scenario === pair.id).map((s) => s.workload))) {
      const bare = get(BARE, workload);
      const first = get(FIRST_FILTER, workload);
      const both = get(pair.id, workload);
      // A repeated admission has no "alone" of its own: its second copy costs what admission alone does.
      const alone = get(later, workload);
      if (!bare || !first || !both || !alone) continue;
      rows.push({
        filter: later === FIRST_FILTER ? `${FIRST_FILTER} (second copy)` : later,
        workload,
        aloneCpuUs: alone.cpuUsPerRequest - bare.cpuUsPerRequest,
        afterFirstCpuUs: both.cpuUsPerRequest - first.cpuUsPerRequest,
        aloneLatencyMs: alone.loneP50Ms - bare.loneP50Ms,
        afterFirstLatencyMs: both.loneP50Ms - first.loneP50Ms,
      });
    }
  }
  return rows;
}

/** Each tracing scenario against the chain it traces (`all`), workload by workload. */
export function tracingCost(summary: CellSummary[], scenarios: Scenario[]): TracingRow[] {
  const rows: TracingRow[] = [];
  for (const traced of scenarios.filter((s) => s.tracing)) {
    for (const cell of summary.filter((c) => c.scenario === traced.id)) {
      const plain = summary.find((c) => c.scenario === ALL && c.workload === cell.workload);
      if (!plain) continue;
      rows.push({
        scenario: traced.id,
        sampling: traced.tracing!.sampling,
        tags: traced.tracing!.tags,
        workload: cell.workload,
        addedCpuUs: cell.cpuUsPerRequest - plain.cpuUsPerRequest,
        addedLoneP50Ms: cell.loneP50Ms - plain.loneP50Ms,
        rpsRatio: cell.rps / plain.rps,
      });
    }
  }
  return rows;
}

/** Per call kind and workload: extra proxy CPU of the call-<kind> reference over wasm-pass, per call. */
export function hostCallCosts(summary: CellSummary[]): { kind: string; workload: string; usPerCall: number }[] {
  const costs: { kind: string; workload: string; usPerCall: number }[] = [];
  for (const cell of summary) {
    if (!cell.scenario.startsWith(HOST_CALL_PREFIX)) continue;
    const pass = summary.find((c) => c.scenario === "wasm-pass" && c.workload === cell.workload);
    if (!pass) continue;
    costs.push({ kind: cell.scenario.slice(HOST_CALL_PREFIX.length), workload: cell.workload, usPerCall: (cell.cpuUsPerRequest - pass.cpuUsPerRequest) / HOST_CALL_REPEAT });
  }
  return costs;
}

/** The scenario that stands for "all filters": the full chain, or the only filter there is. */
export function allFiltersScenario(scenarios: Scenario[]): Scenario | undefined {
  return scenarios.find((s) => s.id === ALL) ?? scenarios.find((s) => s.kind === "alone");
}

/** Proxy CPU per 1 KB request against bare Envoy's, for a scenario with a CPU target. */
function cpuVerdict(summary: CellSummary[], scenario: Scenario | undefined, label: string): Verdict | null {
  const limit = scenario && TARGETS.maxCpuRatio1k[scenario.id];
  if (!scenario || limit === undefined) return null;
  const at1k = summary.find((s) => s.scenario === scenario.id && s.workload === "1k");
  let measured = at1k?.vsBare
    ? `${fmt(at1k.vsBare.cpu, 2)}x (${fmt(at1k.cpuUsPerRequest, 1)} vs ${fmt(at1k.cpuUsPerRequest / at1k.vsBare.cpu, 1)} µs); requests/s ${pct(at1k.vsBare.rps)} of bare`
    : "not measured";
  // What Envoy alone charges for that many Wasm filters bounds what any filter code could reach.
  const rawChain = summary.find((s) => s.scenario === rawChainId(scenario.chain.length) && s.workload === "1k");
  if (at1k?.vsBare && rawChain?.vsBare && scenario.chain.length > 1) {
    measured += `; ${scenario.chain.length} Wasm filters that do nothing (${rawChain.scenario}) already cost ${fmt(rawChain.vsBare.cpu, 2)}x`;
  }
  return { target: `${label}: proxy CPU per 1 KB request <= ${limit}x bare Envoy's`, measured, met: at1k?.vsBare ? at1k.vsBare.cpu <= limit : null };
}

function latencyVerdict(summary: CellSummary[], scenario: Scenario, label: string): Verdict {
  const at16k = summary.find((s) => s.scenario === scenario.id && s.workload === "16k");
  return {
    target: `${label} adds <= ${TARGETS.maxAddedP50Ms16k} ms at p50 for a lone 16 KB request`,
    measured: at16k?.vsBare ? `+${fmt(at16k.vsBare.addedLoneP50Ms, 3)} ms (p50 of a lone request ${fmt(at16k.loneP50Ms, 3)} vs ${fmt(at16k.loneP50Ms - at16k.vsBare.addedLoneP50Ms, 3)} ms); +${fmt(at16k.vsBare.addedCpuUs / 1000, 3)} ms of proxy CPU` : "not measured",
    met: at16k?.vsBare ? at16k.vsBare.addedLoneP50Ms <= TARGETS.maxAddedP50Ms16k : null,
  };
}

function scanVerdicts(kernels: KernelResult[]): Verdict[] {
  return ["16k", "128k"].map((input) => {
    const scan = kernels.find((k) => k.kernel === "scanRequest" && k.input === input);
    return {
      target: `admission's body scan (scanRequest in V8) >= ${TARGETS.minScanMBps} MB/s at ${input.toUpperCase().replace("K", " KB")}`,
      measured: scan ? `${fmt(scan.mbPerSecond, 1)} MB/s` : "not measured",
      met: scan ? scan.mbPerSecond >= TARGETS.minScanMBps : null,
    };
  });
}

function hostCallVerdict(hostCalls: HostCallCount[]): Verdict {
  const lean = hostCalls.find((h) => h.scenario === ONE_MODULE_LEAN && h.workload === "1k");
  const calls = lean && Object.values(lean.hostCalls).reduce((sum, n) => sum + n, 0);
  return {
    target: `${ONE_MODULE_LEAN}: <= ${TARGETS.maxHostCallsLean} host calls (VM to Envoy) per 1 KB request`,
    measured: calls === undefined ? "not measured" : `${fmt(calls, 1)} (${hostCallText(lean!.hostCalls)})`,
    met: calls === undefined ? null : calls <= TARGETS.maxHostCallsLean,
  };
}

export function verdicts(summary: CellSummary[], scenarios: Scenario[], modules: FilterModule[], kernels: KernelResult[], hostCalls: HostCallCount[]): Verdict[] {
  const out: Verdict[] = [];
  const all = allFiltersScenario(scenarios);
  const label = all ? (all.id === ALL ? `all filters (${all.chain.join(", ")})` : `${all.id} (the only filter built)`) : "all filters";
  const mesh = scenarios.find((s) => s.id === ONE_MODULE);
  const lean = scenarios.find((s) => s.id === ONE_MODULE_LEAN);
  for (const [scenario, name] of [[all, label], [mesh, `one module (${ONE_MODULE})`], [lean, `one module without the optional x-llm-*/x-ratelimit-* headers, access-log records and llm_mesh.* filter state (${ONE_MODULE_LEAN})`]] as const) {
    const verdict = cpuVerdict(summary, scenario, name);
    if (verdict) out.push(verdict);
  }
  if (mesh) out.push(latencyVerdict(summary, mesh, `one module (${ONE_MODULE})`));
  if (kernels.length > 0) out.push(...scanVerdicts(kernels));
  if (lean && hostCalls.length > 0) out.push(hostCallVerdict(hostCalls));
  const local = summary.find((s) => s.scenario === "throttle" && s.workload === "1k");
  const global = summary.find((s) => s.scenario === GLOBAL_THROTTLE && s.workload === "1k");
  const envoyCall = summary.find((s) => s.scenario === ENVOY_RATELIMIT && s.workload === "1k");
  if (scenarios.some((s) => s.id === GLOBAL_THROTTLE)) {
    const added = global && local ? global.loneP50Ms - local.loneP50Ms : undefined;
    // What Envoy's own filter pays for one call to the same service bounds what any filter could reach.
    const floor = envoyCall?.vsBare
      ? `; Envoy's own rate limit filter asking the same service (${ENVOY_RATELIMIT}) adds +${fmt(envoyCall.vsBare.addedLoneP50Ms, 3)} ms and +${fmt(envoyCall.vsBare.addedCpuUs, 1)} µs to bare Envoy`
      : "";
    out.push({
      target: `a global reservation (${GLOBAL_THROTTLE} over throttle) adds <= ${TARGETS.maxAddedGlobalP50Ms} ms at p50 for a lone 1 KB request`,
      measured: global && local
        ? `+${fmt(added, 3)} ms (${fmt(global.loneP50Ms, 3)} vs ${fmt(local.loneP50Ms, 3)} ms); +${fmt(global.cpuUsPerRequest - local.cpuUsPerRequest, 1)} µs of proxy CPU per request under load, ` +
          `and ${fmt(global.sideCpuUsPerRequest, 1)} µs in the rate limit service and Redis${floor}`
        : "not measured",
      met: added === undefined ? null : added <= TARGETS.maxAddedGlobalP50Ms,
    });
  }
  for (const m of modules) {
    const limit = moduleLimit(m.name);
    out.push({ target: `build/${m.name}.wasm <= ${limit / 1024} KiB`, measured: `${fmt(m.bytes / 1024, 1)} KiB`, met: m.bytes <= limit });
  }
  return out;
}

/** The size target of a release module: the one module carries all four filters. */
export const moduleLimit = (name: string) => (name === ONE_MODULE ? TARGETS.maxOneModuleBytes : TARGETS.maxModuleBytes);

// ---------------------------------------------------------------- Markdown

export const fmt = (n: number | undefined, digits = 2) => (n === undefined || !Number.isFinite(n) ? "–" : n.toFixed(digits));
const pct = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "–" : `${(n * 100).toFixed(0)}%`);
const ratio = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "1.00" : n.toFixed(2));
const signed = (n: number | undefined, digits = 3) => (n === undefined || !Number.isFinite(n) ? "–" : `${n >= 0 ? "+" : ""}${n.toFixed(digits)}`);

export function table(head: string[], rows: string[][], align?: string[]): string {
  const sep = head.map((_, i) => align?.[i] ?? "---");
  return [head, sep, ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n");
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
const mib = (bytes: number | undefined) => (bytes === undefined ? "–" : `${(bytes / 1048576).toFixed(2)} MiB`);

function hostCallText(record: Record<string, number>): string {
  return Object.entries(record)
    .sort((a, b) => b[1] - a[1])
    .map(([name, n]) => `${name.replace(/^proxy_/, "")} ${Number.isInteger(n) ? n : n.toFixed(1)}`)
    .join(", ");
}

export function markdown(r: Report): string {
  const s = r.settings as Record<string, number | string>;
  const lines: string[] = [];
  lines.push(`# llm-mesh benchmark (${r.meta.mode})`);
  lines.push("");
  lines.push(
    `Generated by \`${r.meta.command}\` on ${r.meta.date} (commit ${r.meta.commit}). ` +
      `Envoy ${r.meta.envoy}, ${s.workers} worker (\`--concurrency 1\`), wrk with 1 thread; ` +
      `${s.connections} connections for throughput, 1 connection for lone-request latency; ` +
      `${s.seconds} s per throughput run and ${s.loneSeconds} s per lone-request run after a ${s.warmupSeconds} s warm-up per scenario, ${s.reps} repetition(s), medians shown; CPU pinning: ${s.pinning}. ` +
      `Machine: ${r.meta.cpus} × ${r.meta.cpu}; load average ${r.meta.loadBefore} before, ${r.meta.loadAfter} after (other work on the machine moves the figures; ` +
      `CPU per request is the steadiest of them).`,
  );
  lines.push("");
  lines.push("The upstream is a second Envoy answering with `direct_response` (a 0.9 KB chat completion, or a 108 KB stream of " +
    "400 SSE events), so what differs between rows is the filters' work. Ratios compare with bare Envoy on the same workload in the same run.");
  lines.push("");
  lines.push("Rows: `bare` is Envoy with only the router; `wasm-raw` is the smallest Wasm filter Envoy runs (hand-written WAT: Envoy's own " +
    "cost of a Wasm filter), and `wasm-raw-xN` is N of them chained, as many as `all` has filters; `wasm-pass` and `wasm-read-body` are a " +
    "reference filter on llm-mesh's own proxy-wasm layer (assembly/host/) that " +
    "does nothing, or only holds the headers and copies the body into the VM (the floor any body-reading filter pays); " +
    "a filter name is that filter alone; `all` is every filter in the recommended order; `mesh` is the same filters with the same " +
    "configurations as one module (build/mesh.wasm), and `mesh-lean` that module without the optional `x-llm-*` and `x-ratelimit-*` " +
    "headers, access-log records and `llm_mesh.*` filter state (its stages still share the facts inside the module); `admission+x` pairs show the body scanned once; `throttle-global` is llm-throttle with its rule " +
    "counted by Envoy's rate limit service (envoyproxy/ratelimit and Redis on loopback, on the upstream's CPU) instead of shared data: " +
    "one gRPC call per request before it is forwarded; `envoy-ratelimit` is Envoy's own rate limit filter (no Wasm) asking the same service " +
    "once per request with one descriptor: the floor of such a call.");
  lines.push("");
  lines.push("Workloads: " + r.workloads.map((w) => `\`${w.id}\` ${w.description} (${w.bytes} bytes)`).join("; ") + ".");
  lines.push("");

  lines.push("## Targets");
  lines.push("");
  lines.push(table(["target", "measured", "met"], r.verdicts.map((v) => [v.target, v.measured, v.met === null ? "not measured" : v.met ? "yes" : "**no**"])));
  lines.push("");

  lines.push("## Throughput and latency under load");
  lines.push("");
  lines.push(
    `${s.connections} connections kept busy. CPU µs/req is the proxy's CPU time (all threads, from /proc) per request; proxy busy is the ` +
      "share of one core it used: well under 100% means something else (the load generator, the upstream, other work on the machine) " +
      "held it back, and its requests/s understates what it could do. req/s spread is (max − min) / median over the repetitions.",
  );
  lines.push("");
  const loadRows: string[][] = [];
  for (const w of r.workloads) {
    for (const c of r.summary.filter((x) => x.workload === w.id)) {
      loadRows.push([w.id, c.scenario, fmt(c.rps, 0), ratio(c.vsBare?.rps), fmt(c.p50Ms, 3), ratio(c.vsBare?.p50), fmt(c.p99Ms, 3), ratio(c.vsBare?.p99), fmt(c.cpuUsPerRequest, 1), ratio(c.vsBare?.cpu), pct(c.frontBusy), pct(c.rpsSpread)]);
    }
  }
  lines.push(table(["workload", "scenario", "req/s", "× bare", "p50 ms", "× bare", "p99 ms", "× bare", "CPU µs/req", "× bare", "proxy busy", "req/s spread"], loadRows,
    ["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]));
  lines.push("");

  lines.push("## Latency of a lone request");
  lines.push("");
  lines.push("One connection, one request at a time: the time a filter adds to a request on an idle proxy.");
  lines.push("");
  const loneRows: string[][] = [];
  for (const w of r.workloads) {
    for (const c of r.summary.filter((x) => x.workload === w.id)) {
      loneRows.push([w.id, c.scenario, fmt(c.loneP50Ms, 3), signed(c.vsBare?.addedLoneP50Ms), ratio(c.vsBare?.loneP50), fmt(c.loneP99Ms, 3), ratio(c.vsBare?.loneP99)]);
    }
  }
  lines.push(table(["workload", "scenario", "p50 ms", "added ms", "× bare", "p99 ms", "× bare"], loneRows, ["---", "---", "---:", "---:", "---:", "---:", "---:"]));
  lines.push("");

  const problems = r.cells.filter((c) => c.problem);
  if (problems.length) {
    lines.push("Not measured (the check request failed):");
    lines.push("");
    for (const c of problems) lines.push(`- ${c.scenario} / ${c.workload}: ${c.problem}`);
    lines.push("");
  }

  lines.push("## The body is scanned once");
  lines.push("");
  if (r.scanOnce.length === 0) {
    lines.push("Not measured in this run (needs the admission filter and a pair scenario).");
  } else {
    lines.push(
      "What a filter after admission costs when it can read the facts admission published (filter state) compared with the same filter " +
        "alone, where it has to read the body itself. Extra proxy CPU per request and extra p50 of a lone request, over bare Envoy (alone) " +
        "or over admission alone (after admission).",
    );
    lines.push("");
    lines.push(table(["filter", "workload", "alone: CPU µs/req", "after admission: CPU µs/req", "alone: added p50 ms", "after admission: added p50 ms"],
      r.scanOnce.map((x) => [x.filter, x.workload, signed(x.aloneCpuUs, 1), signed(x.afterFirstCpuUs, 1), signed(x.aloneLatencyMs), signed(x.afterFirstLatencyMs)]),
      ["---", "---", "---:", "---:", "---:", "---:"]));
  }
  lines.push("");

  lines.push("## What tracing adds");
  lines.push("");
  if (r.tracing.length === 0) {
    lines.push(`Not measured in this run${r.tracingMissing ? ` (${r.tracingMissing})` : ""}.`);
  } else {
    lines.push(
      "`all` with Envoy's OpenTelemetry tracer as envoy/tracing.yaml sets it (parent-based sampler, llm-mesh's custom tags, " +
        "Envoy's default batching: 5 spans or 5 s), sending OTLP/gRPC to a local Jaeger pinned beside the upstream; at 0 % no request " +
        "arrives sampled, so none is traced; `-untagged` leaves llm-mesh's custom tags out, so the difference to it is what the tags " +
        "cost. Compared with `all` in the same run. The filters make no call for tracing: the tags read the filter state they set anyway.",
    );
    lines.push("");
    lines.push(table(["scenario", "sampled", "llm-mesh tags", "workload", "added CPU µs/req", "added lone p50 ms", "req/s × all"],
      r.tracing.map((t) => [t.scenario, `${t.sampling} %`, t.tags ? "yes" : "no", t.workload, signed(t.addedCpuUs, 1), signed(t.addedLoneP50Ms), ratio(t.rpsRatio)]),
      ["---", "---:", "---", "---", "---:", "---:", "---:"]));
    lines.push("");
    lines.push("Spans: " + r.tracingSpans.map((t) => `${t.scenario} sent ${t.sent}, dropped ${t.dropped}`).join("; ") + ".");
  }
  lines.push("");

  lines.push("## Modules");
  lines.push("");
  lines.push(table(["module", "size", "target", "benchmark config"], r.modules.map((m) => [`build/${m.name}.wasm`, kib(m.bytes), `${m.bytes <= moduleLimit(m.name) ? "" : "**no**: "}≤ ${moduleLimit(m.name) / 1024} KiB`, `\`${m.configSource}\``])));
  if (r.sizes.length) {
    lines.push("");
    lines.push("Where the bytes go (a release build that keeps its names, code summed by source file; the largest shares):");
    lines.push("");
    lines.push(table(["module", "largest shares"], r.sizes.map((m) => [m.module, m.top.map((t) => `${t.origin} ${kib(t.bytes)}`).join("; ")])));
  }
  if (r.skippedFilters.length) {
    lines.push("");
    for (const skipped of r.skippedFilters) lines.push(`- skipped ${skipped}`);
  }
  lines.push("");

  lines.push("## Memory per Wasm VM");
  lines.push("");
  if (r.memory.length === 0) {
    lines.push("Not measured in this run.");
  } else {
    lines.push(
      `Envoy's resident memory with 1 and with ${r.memoryWorkers} workers after traffic on every worker (the 128 KB workload); ` +
        `each extra worker adds one VM per module. Per VM = (difference − bare Envoy's difference) / ${r.memoryWorkers - 1} / modules. ` +
        "wasm VMs is Envoy's own wasm.wasm_vm_count.",
    );
    lines.push("");
    lines.push(table(["scenario", "modules", "RSS, 1 worker", `RSS, ${r.memoryWorkers} workers`, "wasm VMs", "per VM"],
      r.memory.map((m) => [m.scenario, String(m.modules), mib(m.rssOneWorker), mib(m.rssManyWorkers), `${m.vmsOneWorker} → ${m.vmsManyWorkers}`, mib(m.perVm)]),
      ["---", "---:", "---:", "---:", "---:", "---:"]));
  }
  lines.push("");

  lines.push("## Hot code in V8 (micro-benchmarks)");
  lines.push("");
  if (r.kernels.length === 0) {
    lines.push("Not measured in this run.");
  } else {
    lines.push(
      `build/kernels.wasm in Node ${r.meta.node} (V8, the engine Envoy embeds). scanRequest is admission's whole body scan ` +
        "(readLlmRequest: JSON parsing and token estimation of every message); estimateTokens is the estimator alone over the messages' text; " +
        "trackUsage is the answer reader (UsageTracker) that llm-metrics runs over every answer byte, and llm-throttle when metrics is absent.",
    );
    lines.push("");
    lines.push(table(["kernel", "input", "bytes", "tokens", "µs per call", "MB/s"],
      r.kernels.map((k) => [k.kernel, k.input, String(k.bytes), String(k.tokens), fmt(k.usPerCall, 1), fmt(k.mbPerSecond, 1)]),
      ["---", "---", "---:", "---:", "---:", "---:"]));
  }
  for (const m of r.kernelsMissing) lines.push(`\nMissing: ${m}.`);
  lines.push("");
  if (r.profile.length) {
    lines.push("Where scanRequest spends its time on the 16 KB body (V8 sampling profile, self time, release code with names kept):");
    lines.push("");
    lines.push(table(["function", "share"], r.profile.map((p) => [`\`${p.name}\``, pct(p.share)]), ["---", "---:"]));
    lines.push("");
  }

  lines.push("## Calls across the Wasm boundary per request");
  lines.push("");
  if (r.hostCalls.length === 0) {
    lines.push("Not measured in this run.");
  } else {
    lines.push(
      "Counted from Envoy's `--component-log-level wasm:trace` log over a few requests; bytes in = what Envoy copied into the VMs " +
        "(malloc sizes). Workloads with the same counts share a row.",
    );
    lines.push("");
    const total = (rec: Record<string, number>) => Object.values(rec).reduce((a, b) => a + b, 0);
    const rows: string[][] = [];
    for (const scenario of new Set(r.hostCalls.map((h) => h.scenario))) {
      const groups = new Map<string, HostCallCount[]>();
      for (const h of r.hostCalls.filter((x) => x.scenario === scenario)) {
        const key = `${fmt(total(h.callbacks), 0)}: ${hostCallText(h.callbacks)}|${fmt(total(h.hostCalls), 0)}: ${hostCallText(h.hostCalls)}`;
        groups.set(key, [...(groups.get(key) ?? []), h]);
      }
      for (const [key, members] of groups) {
        const [callbacks, hostCalls] = key.split("|");
        rows.push([scenario, members.map((m) => m.workload).join(", "), callbacks, hostCalls, members.map((m) => `${m.workload}: ${fmt(m.bytesIn, 0)}`).join(", ")]);
      }
    }
    lines.push(table(["scenario", "workloads", "callbacks (host → VM)", "host calls (VM → host)", "bytes in"], rows));
  }
  lines.push("");

  lines.push("## Where the proxy's CPU goes");
  lines.push("");
  if (r.cpuSplits.length === 0) {
    lines.push(`Not measured in this run${r.cpuSplitMissing ? `: ${r.cpuSplitMissing}` : "."}`);
  } else {
    lines.push(
      "Linux `perf record` sampled the proxy for one throughput run's length under the same load, and `perf report --sort dso` " +
        "sorted the samples by the home of the code: Envoy's binary, code V8 generated (the Wasm modules and V8's stubs between " +
        "them and Envoy), the kernel, shared libraries. µs per request = share × the cell's median CPU per request above. " +
        "Envoy's binary is stripped and V8 writes no symbol map inside Envoy, so the split goes no finer.",
    );
    lines.push("");
    const HOME_NAMES: Record<string, string> = { envoy: "Envoy", jit: "Wasm and V8 stubs", kernel: "kernel", libraries: "libraries" };
    const rows = r.cpuSplits.map((c) => {
      const cpu = r.summary.find((x) => x.scenario === c.scenario && x.workload === c.workload)?.cpuUsPerRequest;
      return [c.scenario, c.workload, ...CODE_HOMES.map((h) => `${pct(c.shares[h])} (${fmt(cpu === undefined ? undefined : c.shares[h] * cpu, 0)} µs)`), String(c.samples)];
    });
    lines.push(table(["scenario", "workload", ...CODE_HOMES.map((h) => HOME_NAMES[h]), "samples"], rows, ["---", "---", ...CODE_HOMES.map(() => "---:"), "---:"]));
  }
  lines.push("");

  lines.push("## The one module's own code, function by function");
  lines.push("");
  if (r.moduleProfiles.length === 0) {
    lines.push("Not measured in this run.");
  } else {
    lines.push(
      "What the split above cannot show: build/mesh.wasm, built again with its names kept, in Node's V8 (the engine Envoy embeds), " +
        "driven through the callbacks Envoy makes for one request with its host calls answered from fixed data (the benchmark's " +
        "request and answer, status 200), under V8's sampling profiler (`scripts/bench/module-profile.ts`). Module µs is the " +
        "module's own functions per request; what the host side of each call costs is Envoy's and is in the tables above. " +
        "Host calls are the ones the module made here, to compare with the counts from Envoy.",
    );
    lines.push("");
    lines.push(table(["scenario", "workload", "module µs/req", "allocator and collector", "largest functions (µs/req)", "host calls per request"],
      r.moduleProfiles.map((m) => [m.scenario, m.workload, fmt(m.moduleUsPerRequest, 1), fmt(m.allocatorUsPerRequest, 1),
        m.functions.slice(0, 6).map((f) => `\`${f.name}\` ${fmt(f.usPerRequest, 1)}`).join("; "),
        Object.entries(m.hostCallsPerRequest).map(([name, n]) => `${name.replace(/^proxy_/, "")} ${fmt(n, 1)}`).join(", ")]),
      ["---", "---", "---:", "---:", "---", "---"]));
  }
  lines.push("");

  const callCosts = hostCallCosts(r.summary);
  if (callCosts.length > 0) {
    lines.push("## What one host call costs");
    lines.push("");
    lines.push(`A reference filter that makes one kind of call ${HOST_CALL_REPEAT} times on the request headers (\`--host-call-costs\`): ` +
      `(its proxy CPU per request − \`wasm-pass\`'s) / ${HOST_CALL_REPEAT}, under load, per workload. Noise is about 10 µs per request, so ` +
      `within about ±0.5 µs a call is indistinguishable from free.`);
    lines.push("");
    const workloads = [...new Set(callCosts.map((c) => c.workload))];
    const kinds = [...new Set(callCosts.map((c) => c.kind))];
    lines.push(table(["call", ...workloads.map((w) => `${w}: µs per call`)],
      kinds.map((k) => [k, ...workloads.map((w) => fmt(callCosts.find((c) => c.kind === k && c.workload === w)?.usPerCall))]),
      ["---", ...workloads.map(() => "---:")]));
    lines.push("");
  }

  if (r.notes.trim()) {
    lines.push(r.notes.trim());
    lines.push("");
  }
  return lines.join("\n");
}
