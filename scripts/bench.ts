// `npm run bench`: what llm-mesh costs a request, measured against bare Envoy on this machine.
//
// Starts one upstream Envoy (direct_response answers, near-zero cost) and one proxy per scenario
// (bare Envoy, each filter in build/ alone, all chained in the recommended order, and the pairs that
// show the body is scanned once), drives them with wrk, and writes bench-results/<name>.{json,md}.
// See `--help` for the modes; docs/benchmarks.md cites bench-results/latest.md, the one report kept
// in git: the JSON beside it is for tools and stays out of history (.gitignore).
import { execFileSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { envoyBinary, repoDir } from "../tooling/envoy-bin.ts";
import { jsonAnswer, type Workload, workloads as allWorkloads } from "./bench/bodies.ts";
import { type Backends, checkOnce, type RunningEnvoy, startFront, startRateLimitBackend, startUpstream, stopEnvoy, workloadTarget } from "./bench/envoys.ts";
import { countHostCalls, type HostCallCount } from "./bench/hostcalls.ts";
import { type KernelResult, profileScan, type ProfileEntry, runKernelBenchmarks } from "./bench/kernels.ts";
import { measureMemory, type MemoryResult } from "./bench/memory.ts";
import { profileModule } from "./bench/module-profile.ts";
import { namedReleaseBuild } from "./bench/named-build.ts";
import { type CpuSplit, perfAvailable, sampleCpu } from "./bench/perf.ts";
import { measureCell } from "./bench/measure.ts";
import { peersMarkdown, runPeers } from "./bench/peers.ts";
import { pin, placement } from "./bench/proc.ts";
import { type ModuleSizes, moduleSizes } from "./bench/sizes.ts";
import { type Cell, markdown, type Report, scanOnce, summarize, tracingCost, verdicts } from "./bench/report.ts";
import { ALL, BARE, buildReferenceFilters, buildScenarios, discoverFilters, ENVOY_RATELIMIT, envoyRateLimitReference, type FilterModule, HOST_CALL_KINDS, HOST_CALL_PREFIX, ONE_MODULE, ONE_MODULE_LEAN, type Scenario, tracingId, tracingScenarios } from "./bench/scenarios.ts";
import { startJaeger } from "../tooling/jaeger.ts";
import { ensureWrk, runWrk } from "./bench/wrk.ts";
import { rateLimitBinary } from "../tooling/ratelimit.ts";

const HELP = `usage: npm run bench -- [--quick | --smoke] [options]

  (default)        full run, ~7-10 min: 3 repetitions of 2 s per scenario and workload,
                   memory per VM for every filter, host-call counts; writes bench-results/latest.*
  --quick          ~1.5 min: one repetition of 1 s, 1 KB and 16 KB only; writes bench-results/quick.*
  --smoke          seconds: 1 KB workload, bare/first filter/all only; proves the script works
                   (test/bench-smoke.test.ts); writes .tmp/bench-smoke/smoke.*
  --reps N         repetitions (medians are reported)
  --seconds N      seconds per throughput run (wrk takes whole seconds); lone-request runs take 1 s
  --connections N  connections for the throughput runs (default 16)
  --only a,b       only these scenarios (ids as in the report: bare, admission, all, admission+throttle,
                   all+tracing-100, all+tracing-0, all+tracing-100-untagged: every filter with
                   Envoy's tracer, which needs npm run setup:tracing; left out of --smoke)
  --out DIR        where to write <name>.json and <name>.md
  --no-pin         do not bind the proxy, the upstream and wrk to separate CPUs
  --no-memory, --no-hostcalls, --no-kernels, --no-sizes, --no-perf   skip those parts
                   (--no-perf: the perf profile of where the proxy's CPU goes, 1 KB and 16 KB;
                   --no-kernels: the V8 micro-benchmarks and profiles, the one module's included)
  --host-call-costs  also what one host call of each kind costs (a reference filter repeating it)

  --peers          ~5 min: llm-mesh (mesh, mesh-lean) next to bare Envoy, LiteLLM's proxy without and
                   with a tokens-per-minute limit, and Envoy's own filters with envoyproxy/ratelimit
                   and Redis; writes bench-results/peers.*; installs LiteLLM into .peers/ the first
                   time (scripts/setup-litellm.sh). With --smoke: 1 KB only, one short repetition,
                   into .tmp/bench-smoke/. Takes --reps, --seconds, --connections, --out, --no-pin.
  --no-litellm     with --peers: leave LiteLLM out
`;

type Mode = "full" | "quick" | "smoke";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean" },
    smoke: { type: "boolean" },
    reps: { type: "string" },
    seconds: { type: "string" },
    connections: { type: "string" },
    only: { type: "string" },
    out: { type: "string" },
    "no-pin": { type: "boolean" },
    "no-memory": { type: "boolean" },
    "no-hostcalls": { type: "boolean" },
    "no-kernels": { type: "boolean" },
    "no-sizes": { type: "boolean" },
    "no-perf": { type: "boolean" },
    "host-call-costs": { type: "boolean" },
    peers: { type: "boolean" },
    "no-litellm": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const mode: Mode = args.smoke ? "smoke" : args.quick ? "quick" : "full";
const PRESETS = {
  full: { reps: 3, seconds: 2, loneSeconds: 1, warmupSeconds: 2, memoryWorkers: 4, memory: "every", hostCallRequests: 3, kernelMs: 600 },
  quick: { reps: 1, seconds: 1, loneSeconds: 1, warmupSeconds: 1, memoryWorkers: 4, memory: "all", hostCallRequests: 2, kernelMs: 200 },
  smoke: { reps: 1, seconds: 1, loneSeconds: 1, warmupSeconds: 0, memoryWorkers: 2, memory: "all", hostCallRequests: 1, kernelMs: 30 },
}[mode];
const positive = (text: string | undefined, fallback: number, name: string) => {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${text}`);
  return n;
};
const cpuPlan = args["no-pin"] ? undefined : placement();
const settings = {
  mode,
  reps: positive(args.reps, PRESETS.reps, "reps"),
  seconds: positive(args.seconds, PRESETS.seconds, "seconds"),
  loneSeconds: PRESETS.loneSeconds,
  warmupSeconds: PRESETS.warmupSeconds,
  connections: positive(args.connections, 16, "connections"),
  workers: 1,
  memoryWorkers: PRESETS.memoryWorkers,
  pinning: cpuPlan ? `proxy on CPU ${cpuPlan.front}, upstream on CPU ${cpuPlan.upstream}, wrk on CPU ${cpuPlan.wrk}` : "none",
};
const outDir = resolve(args.out ?? (mode === "smoke" ? join(repoDir, ".tmp", "bench-smoke") : join(repoDir, "bench-results")));
const reportName = args.peers ? "peers" : mode === "full" ? "latest" : mode;

const started = Date.now();
const log = (line: string) => process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${line}\n`);

function tryRun(cmd: string, argv: string[]): string {
  try {
    return execFileSync(cmd, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], cwd: repoDir }).trim();
  } catch {
    return "unknown";
  }
}

/** Why Envoy will not run the filter alone, or null when it starts. */
async function refusedByEnvoy(filter: FilterModule, modules: FilterModule[], backends: Backends): Promise<string | null> {
  try {
    const front = await startFront({ id: filter.name, chain: [filter.name], kind: "alone" }, modules, backends);
    await stopEnvoy(front);
    return null;
  } catch (err) {
    const text = (err as Error).message;
    const reasons = [...text.matchAll(/\]\[(?:critical|error)\]\[\w+\] \[[^\]]*\] (.*)/g)].map((m) => m[1].trim());
    return reasons[0] ?? text.split("\n")[0];
  }
}

async function main(): Promise<void> {
  ensureWrk(log);
  envoyBinary();
  mkdirSync(join(repoDir, ".tmp"), { recursive: true });
  const runDir = mkdtempSync(join(repoDir, ".tmp", "bench-run-"));
  const { filters, meshes, variants: found, skipped } = discoverFilters();
  // A variant that asks the rate limit service needs it built (npm run setup:ratelimit).
  const serviceMissing = (() => {
    try {
      rateLimitBinary();
      return null;
    } catch (err) {
      return (err as Error).message;
    }
  })();
  const variants = found.filter((v) => !v.asksRateLimitService || !serviceMissing);
  for (const v of found.filter((v) => !variants.includes(v))) skipped.push(`${v.name}: ${serviceMissing}`);
  /** Every llm-mesh module measured: the filters, the one-module build of them all, and the variants. */
  const llmModules = [...filters, ...meshes, ...variants];
  /** The domain the rate limit service declares, when a variant asks it. */
  const asking = variants.find((v) => v.asksRateLimitService);
  const rateLimitDomain: string | undefined = asking && JSON.parse(asking.config).rate_limit_service.domain;
  /** The module files among them (the one-module scenarios share theirs). */
  const moduleFiles = llmModules.filter((m, i) => llmModules.findIndex((o) => o.file === m.file) === i);
  for (const s of skipped) log(`skipping ${s}`);
  log(`filters: ${llmModules.map((f) => `${f.name} (${(f.bytes / 1024).toFixed(1)} KiB, ${f.configSource})`).join(", ") || "none built (run npm run build)"}`);

  // The quick run keeps the two workloads the targets are stated for.
  const workloads = allWorkloads().filter((w) => mode === "full" || w.id === "1k" || (mode === "quick" && w.id === "16k"));
  const bodyFiles = new Map<string, string>();
  for (const w of workloads) {
    const file = join(runDir, `${w.id}.json`);
    writeFileSync(file, w.body);
    bodyFiles.set(w.id, file);
  }
  const scanWorkloads = ["16k", "128k"].filter((id) => workloads.some((w) => w.id === id));
  // The reference filters show Envoy's own cost of a Wasm filter; the smoke run leaves them out for time.
  let references: FilterModule[] = [];
  if (mode !== "smoke") {
    log("compiling the reference filters (scripts/bench/reference-raw.wat, reference-filter.ts)");
    const built = buildReferenceFilters(runDir, args["host-call-costs"] ? HOST_CALL_KINDS : []);
    references = built.references;
    if (rateLimitDomain) references.push(envoyRateLimitReference(rateLimitDomain));
    for (const problem of built.skipped) {
      log(`leaving out ${problem}`);
      skipped.push(problem);
    }
  }
  const modules = [...llmModules, ...references];
  let scenarios: Scenario[] = [];
  const workloadsOf = (s: Scenario) => workloads.filter((w) => !s.workloads || s.workloads.includes(w.id));

  const meta = {
    mode,
    // As run, so that a report of some scenarios (--only) or more repetitions says so.
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    commit: tryRun("git", ["rev-parse", "--short", "HEAD"]) + (tryRun("git", ["status", "--porcelain", "--", "assembly"]) ? " + uncommitted changes in assembly/" : ""),
    envoy: /version: \S+\/(\d+\.\d+\.\d+)/.exec(tryRun(envoyBinary(), ["--version"]))?.[1] ?? "unknown",
    wrk: tryRun("sh", ["-c", "wrk -v 2>&1 | head -1"]),
    node: process.versions.node,
    cpu: cpus()[0]?.model ?? "unknown",
    cpus: cpus().length,
    loadBefore: loadavg()[0].toFixed(2),
    loadAfter: "",
  };

  const upstream = await startUpstream(runDir);
  // Only the measured runs are pinned; memory and host-call counts start their own proxies unpinned.
  if (cpuPlan) pin(upstream.pid, cpuPlan.upstream);
  const backends: Backends = { upstream };
  const fronts = new Map<string, RunningEnvoy>();
  const cells: Cell[] = [];
  const hostCalls: HostCallCount[] = [];
  let memory: MemoryResult[] = [];
  let kernels: KernelResult[] = [];
  let kernelsMissing: string[] = [];
  let profile: ProfileEntry[] = [];
  const moduleProfiles: Report["moduleProfiles"] = [];
  const cpuSplits: CpuSplit[] = [];
  let cpuSplitMissing = args["no-perf"] ? "--no-perf" : "";
  let sizing: Promise<PromiseSettledResult<ModuleSizes>[]> | undefined;
  let tracingMissing = mode === "smoke" ? "not in --smoke" : "";
  const tracingSpans: Report["tracingSpans"] = [];
  try {
    // A module Envoy refuses (a missing import, a configuration it rejects) is left out of every
    // scenario, with Envoy's reason in the report, instead of failing the whole run.
    const usable: FilterModule[] = [];
    for (const f of llmModules) {
      const refusal = await refusedByEnvoy(f, modules, backends);
      if (refusal) {
        log(`leaving out ${f.name}: Envoy refuses it: ${refusal}`);
        skipped.push(`${f.name}: Envoy refuses it: ${refusal}`);
      } else {
        usable.push(f);
      }
    }
    scenarios = buildScenarios(usable.filter((f) => filters.includes(f)), references, scanWorkloads, usable.filter((f) => meshes.includes(f)), usable.filter((f) => variants.includes(f)));
    // Tracing on the full chain, at the 1 KB workloads: the tracer's cost is per request, not per byte.
    const all = scenarios.find((s) => s.id === ALL);
    if (all && mode !== "smoke") scenarios.push(...tracingScenarios(all, workloads.filter((w) => w.id.startsWith("1k")).map((w) => w.id)));
    if (mode === "smoke") scenarios = scenarios.filter((s) => s.id === BARE || s.id === ALL || s.id === ONE_MODULE || s.id === usable[0]?.name);
    if (args.only) {
      const only = new Set([BARE, ...args.only.split(",")]);
      scenarios = scenarios.filter((s) => only.has(s.id));
    }
    if (rateLimitDomain && modules.some((m) => m.asksRateLimitService && scenarios.some((s) => s.chain.includes(m.name)))) {
      log("starting Redis and the rate limit service (tooling/ratelimit.ts)");
      backends.rateLimit = await startRateLimitBackend(rateLimitDomain);
      // Beside the upstream: a service on the proxy's CPU would take time the proxy is charged for.
      if (cpuPlan) for (const pid of [backends.rateLimit.service.pid, backends.rateLimit.redis.pid]) pin(pid, cpuPlan.upstream);
    }
    if (scenarios.some((s) => s.tracing)) {
      try {
        backends.jaeger = await startJaeger();
        if (cpuPlan) pin(backends.jaeger.pid, cpuPlan.upstream);
      } catch (err) {
        tracingMissing = `no tracing backend: ${(err as Error).message.split("\n")[0]}`;
        log(`leaving out the tracing scenarios: ${tracingMissing}`);
        scenarios = scenarios.filter((s) => !s.tracing);
      }
    }
    log(`starting ${scenarios.length} proxies: ${scenarios.map((s) => s.id).join(", ")}`);
    for (const s of scenarios) {
      const front = await startFront(s, modules, backends);
      if (cpuPlan) pin(front.pid, cpuPlan.front);
      fronts.set(s.id, front);
    }
    for (const s of scenarios) {
      for (const w of workloadsOf(s)) {
        const problem = await checkOnce(fronts.get(s.id)!, w);
        if (problem) log(`${s.id}/${w.id} not measured: ${problem}`);
        cells.push({ scenario: s.id, workload: w.id, load: [], lone: [], problem: problem ?? undefined });
      }
    }
    const cellOf = (s: Scenario, w: Workload) => cells.find((c) => c.scenario === s.id && c.workload === w.id)!;

    if (settings.warmupSeconds > 0) {
      // V8 compiles Wasm in tiers; the first seconds of a VM run slower code. Discarded.
      const warm = workloads.find((w) => w.id === "16k") ?? workloads[0];
      log(`warm-up: ${settings.warmupSeconds} s per proxy (${warm.id}, discarded)`);
      for (const s of scenarios) {
        await runWrk({ ...workloadTarget(fronts.get(s.id)!, warm, bodyFiles.get(warm.id)!), connections: settings.connections, seconds: settings.warmupSeconds, cpus: cpuPlan?.wrk });
      }
    }

    for (let rep = 0; rep < settings.reps; rep++) {
      for (const w of workloads) {
        // Scenarios take turns, starting one later each repetition, so that a burst of other work
        // on the machine does not always land on the same one.
        const active = scenarios.filter((s) => workloadsOf(s).includes(w) && !cellOf(s, w).problem);
        const order = active.map((_, i) => active[(i + rep) % active.length]);
        for (const s of order) {
          const cell = cellOf(s, w);
          // The rate limit service and Redis work for a scenario that asks them: their CPU is reported apart.
          const asks = s.chain.some((name) => modules.find((m) => m.name === name)?.asksRateLimitService);
          const sidePids = asks && backends.rateLimit ? [backends.rateLimit.service.pid, backends.rateLimit.redis.pid] : undefined;
          await measureCell({ ...fronts.get(s.id)!, sidePids }, upstream, w, bodyFiles.get(w.id)!, cell, { ...settings, wrkCpus: cpuPlan?.wrk });
          const last = cell.load[cell.load.length - 1];
          log(`rep ${rep + 1}/${settings.reps} ${w.id.padEnd(6)} ${s.id.padEnd(20)} ${last.rps.toFixed(0).padStart(6)} req/s  ` +
            `p50 ${(last.p50Us / 1000).toFixed(3)} ms  cpu ${last.cpuUsPerRequest.toFixed(1)} µs/req  lone p50 ${(cell.lone[cell.lone.length - 1].p50Us / 1000).toFixed(3)} ms`);
        }
      }
    }
    if (!args["no-perf"] && !perfAvailable()) cpuSplitMissing = "perf is not installed (Debian package linux-perf)";
    if (!cpuSplitMissing) {
      for (const s of scenarios.filter((s) => [BARE, ALL, ONE_MODULE, ONE_MODULE_LEAN].includes(s.id))) {
        for (const w of workloadsOf(s).filter((w) => (w.id === "1k" || w.id === "16k") && !cellOf(s, w).problem)) {
          log(`where the CPU goes (perf): ${s.id} ${w.id}`);
          const front = fronts.get(s.id)!;
          // The load runs a second longer on each side than the sampling, which sees only steady load.
          const load = runWrk({ ...workloadTarget(front, w, bodyFiles.get(w.id)!), connections: settings.connections, seconds: settings.seconds + 2, cpus: cpuPlan?.wrk });
          await new Promise((done) => setTimeout(done, 1000));
          const split = await sampleCpu(front.pid, settings.seconds, join(runDir, "perf.data"));
          await load;
          if (typeof split === "string") cpuSplitMissing = split;
          else cpuSplits.push({ scenario: s.id, workload: w.id, ...split });
        }
      }
      if (cpuSplitMissing) log(`no CPU profile: ${cpuSplitMissing}`);
    }
    for (const s of scenarios.filter((s) => s.tracing)) {
      const stats = await fronts.get(s.id)!.stats();
      tracingSpans.push({ scenario: s.id, sent: stats.get("tracing.opentelemetry.spans_sent") ?? 0, dropped: stats.get("tracing.opentelemetry.spans_dropped") ?? 0 });
    }
    for (const front of fronts.values()) await stopEnvoy(front);
    fronts.clear();
    // Compiling every filter again takes a while; it runs beside the steps that count calls and
    // memory, which its CPU use does not change, and is done before anything is timed again.
    if (mode === "full" && !args["no-sizes"]) {
      log("where the module bytes go: compiling named release builds in the background");
      sizing = Promise.allSettled(moduleFiles.map((f) => moduleSizes(f.name, runDir)));
    }

    if (!args["no-hostcalls"]) {
      // Tracing is counted too, to show it costs the filters no call.
      const traced = scenarios.filter((s) => s.id === ALL || s.id === tracingId(100) || s.id.startsWith(ONE_MODULE) || (mode === "full" && (s.kind === "alone" || (s.kind === "reference" && !s.id.startsWith(HOST_CALL_PREFIX) && s.id !== ENVOY_RATELIMIT))));
      for (const s of traced.length ? traced : scenarios.filter((s) => s.kind === "alone")) {
        log(`counting host calls: ${s.id}`);
        hostCalls.push(...(await countHostCalls(s, modules, backends, workloadsOf(s), PRESETS.hostCallRequests)));
      }
    }

    if (!args["no-memory"]) {
      const measured = scenarios.filter((s) => s.id === BARE || s.id === ALL || s.id === ONE_MODULE || (PRESETS.memory === "every" && s.kind === "alone"));
      const warm = workloads.find((w) => w.id === "128k") ?? workloads[0];
      log(`memory per VM: ${measured.map((s) => s.id).join(", ")} at 1 and ${settings.memoryWorkers} workers`);
      memory = await measureMemory(measured, modules, backends, warm, bodyFiles.get(warm.id)!, settings.memoryWorkers);
    }
  } finally {
    for (const front of fronts.values()) await stopEnvoy(front);
    await stopEnvoy(upstream);
    await backends.rateLimit?.service.stop();
    await backends.rateLimit?.redis.stop();
    await backends.jaeger?.stop();
  }
  const sizes: ModuleSizes[] = [];
  (await sizing)?.forEach((result, i) => {
    if (result.status === "fulfilled") sizes.push(result.value);
    else log(`no size breakdown for ${moduleFiles[i].name}: its source does not compile now (${String(result.reason).split("\n")[0]})`);
  });

  if (!args["no-kernels"]) {
    log("micro-benchmarks of build/kernels.wasm");
    ({ results: kernels, missing: kernelsMissing } = await runKernelBenchmarks(
      workloads.filter((w) => !w.stream).map((w) => ({ id: w.id, body: w.body })),
      PRESETS.kernelMs,
    ));
    const profiled = workloads.find((w) => w.id === "16k");
    if (mode === "full" && profiled && kernelsMissing.length === 0) {
      log(`V8 profile of scanRequest over the ${profiled.id} body`);
      profile = await profileScan(profiled.body, runDir, PRESETS.kernelMs * 2);
    }
    if (meshes.length > 0) {
      const named = join(runDir, "mesh-profiled.wasm");
      await namedReleaseBuild("assembly/mesh/index.ts", "asconfig.json", named);
      const meshWasm = readFileSync(named);
      for (const mesh of meshes) {
        for (const w of workloads.filter((w) => !w.stream && w.id !== "128k")) {
          log(`V8 profile of ${mesh.name}'s own code over a ${w.id} request`);
          moduleProfiles.push({ scenario: mesh.name, workload: w.id, ...(await profileModule(meshWasm, mesh.config, w.body, jsonAnswer(), PRESETS.kernelMs * 2)) });
        }
      }
    }
  }
  meta.loadAfter = loadavg()[0].toFixed(2);

  const summary = summarize(cells);
  const report: Report = {
    meta,
    settings,
    modules: moduleFiles.map((f) => ({ name: f.name, bytes: f.bytes, configSource: f.configSource })),
    skippedFilters: skipped,
    scenarios,
    workloads: workloads.map((w) => ({ id: w.id, description: w.description, bytes: Buffer.byteLength(w.body) })),
    cells,
    summary,
    scanOnce: scanOnce(summary, scenarios),
    memory,
    memoryWorkers: settings.memoryWorkers,
    hostCalls,
    cpuSplits,
    cpuSplitMissing: cpuSplits.length > 0 ? "" : cpuSplitMissing,
    kernels,
    kernelsMissing,
    profile,
    moduleProfiles,
    sizes,
    verdicts: verdicts(summary, scenarios, moduleFiles, kernels, hostCalls),
    tracing: tracingCost(summary, scenarios),
    tracingSpans,
    tracingMissing,
    notes: mode === "smoke" ? "" : readFileSync(join(repoDir, "scripts", "bench", "notes.md"), "utf8"),
  };
  mkdirSync(outDir, { recursive: true });
  const text = markdown(report);
  writeFileSync(join(outDir, `${reportName}.json`), JSON.stringify(report, null, 2) + "\n");
  writeFileSync(join(outDir, `${reportName}.md`), text);
  rmSync(runDir, { recursive: true, force: true });
  process.stdout.write(text);
  log(`wrote ${join(outDir, reportName)}.{json,md} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

async function peers(): Promise<void> {
  const report = await runPeers({
    smoke: mode === "smoke",
    reps: positive(args.reps, mode === "smoke" ? 1 : 3, "reps"),
    seconds: settings.seconds,
    connections: settings.connections,
    outDir,
    pin: !args["no-pin"],
    litellm: !args["no-litellm"],
    log,
  });
  const text = peersMarkdown(report);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, `${reportName}.json`), JSON.stringify(report, null, 2) + "\n");
  writeFileSync(join(outDir, `${reportName}.md`), text);
  process.stdout.write(text);
  log(`wrote ${join(outDir, reportName)}.{json,md} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

(args.peers ? peers() : main()).then(
  // The harness's Envoy handles may keep timers; every process is stopped, so leave now.
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
