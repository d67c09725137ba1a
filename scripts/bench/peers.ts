// `npm run bench -- --peers`: llm-mesh next to the other ways to put token limits in front of a
// model, in one run, on one machine, against one upstream (the benchmark's direct_response Envoy):
// bare Envoy; llm-mesh's one module with and without its optional output; LiteLLM's proxy without a
// limit, with a tokens-per-minute limit counted in its process, and counted in Redis; and what an
// Istio user can assemble from Envoy's own filters (envoy/bench-envoy-filters.yaml) with
// envoyproxy/ratelimit and Redis. Each proxy gets one worker and CPU 0; the upstream, wrk, the rate
// limit service and Redis share the other CPUs. Writes <out>/peers.{md,json}.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { envoyBinary, repoDir } from "../../tooling/envoy-bin.ts";
import { type Redis, startRedis } from "../../tooling/ratelimit.ts";
import { AUTHORIZATION, CHAT_PATH, workloads as allWorkloads } from "./bodies.ts";
import { checkOnce, startFront, startUpstream, stopEnvoy, workloadTarget } from "./envoys.ts";
import { measureCell, type Measured } from "./measure.ts";
import { DOMAIN, startEnvoyFilters } from "./peers/envoy-filters.ts";
import { setupLiteLlm, startLiteLlm } from "./peers/litellm.ts";
import { pin, placement, processCpuNs, rssBytes } from "./proc.ts";
import { type Cell, type CellSummary, fmt, summarize, table } from "./report.ts";
import { BARE, discoverFilters, ONE_MODULE, ONE_MODULE_LEAN } from "./scenarios.ts";
import { ensureWrk, runWrk } from "./wrk.ts";

export interface PeersOptions {
  smoke: boolean;
  reps: number;
  seconds: number;
  connections: number;
  outDir: string;
  pin: boolean;
  /** Leave LiteLLM out (it is an 800 MB install): the smoke test does. */
  litellm: boolean;
  log: (line: string) => void;
}

/**
 * Tokens per minute for each API key and model in every peer that limits: far above what the
 * benchmark sends, so every request takes the admitted path. (The service keeps it in a uint32;
 * llm-mesh's bench config, scripts/bench/configs/throttle.json, has 10^12.)
 */
const TOKENS_PER_MINUTE = 4_000_000_000;

/** llm-mesh's filter that does what the limiting peers do. */
const THROTTLE = "throttle";

/**
 * A peer that takes longer than this for one request (LiteLLM relaying a stream of 400 events) would
 * complete few or none in a normal run, with all connections waiting on it: its runs last longer.
 */
const SLOW_REQUEST_MS = 100;
const SLOW_SECONDS = 10;
const SLOW_LONE_SECONDS = 3;

interface PeerRow {
  id: string;
  /** What runs, in a line. */
  what: string;
  /** What it does not do that llm-mesh (`mesh`) does; for llm-mesh itself, what it lacks. */
  lacks: string;
}

const LITELLM_LACKS =
  "A separate Python service, not the Envoy already in the path: one more hop and process per request, and it does not key limits on " +
  "the mesh's mTLS peer identity (its own sidecar ends mTLS). It does much that llm-mesh does not: translation between provider APIs, " +
  "virtual keys, teams and spend in a database, a UI";

export const PEERS: PeerRow[] = [
  { id: BARE, what: "Envoy 1.40 with only the router", lacks: "Everything: the floor the others are compared with" },
  {
    id: ONE_MODULE,
    what: "llm-mesh, build/mesh.wasm: admission, throttle (tokens/min, requests/s, in flight per key and model), metrics and router stages, configured as in `npm run bench`",
    lacks: "The reference. Its budgets are per proxy (shared by the proxy's workers), not cluster-wide as the Redis-backed peers' are",
  },
  { id: ONE_MODULE_LEAN, what: `as \`${ONE_MODULE}\`, without the optional x-llm-* and x-ratelimit-* headers, access-log records and llm_mesh.* filter state`, lacks: `As \`${ONE_MODULE}\`, and tells the client nothing about its budget, nor access logs and trace spans about the request` },
  {
    id: THROTTLE,
    what: "llm-mesh's throttle filter alone (build/throttle.wasm), the same job as the limiting peers: tokens/min, requests/s and in flight per key and model, reading the body itself",
    lacks: `Its budgets are per proxy; none of \`${ONE_MODULE}\`'s other stages (admission's checks, metrics, routing)`,
  },
  {
    id: "envoy-filters",
    what: "Envoy's own filters: json_to_metadata (model; usage of a JSON answer), sse_to_metadata (usage of a stream), the rate limit filter asking envoyproxy/ratelimit + Redis before the request (hits 0) and when the stream is done (hits = total_tokens)",
    lacks:
      "No prompt-size, model or token-estimate check before the upstream, and no reservation: it admits while the key's minute has any " +
      "token left, so it overshoots by the answers in flight; no in-flight limit, queueing or fallback model (requests/s would take " +
      "another descriptor); a plain-text 429 " +
      "and the IETF draft's RateLimit headers, not the API's error shape and OpenAI's x-ratelimit-*-tokens; no per-model token or latency " +
      "metrics; the API key is a Redis key in clear; sse_to_metadata is marked work-in-progress in Envoy 1.40. Its budget is cluster-wide",
  },
  { id: "litellm", what: "LiteLLM's proxy, one worker, custom auth admitting every key, no limit", lacks: LITELLM_LACKS },
  {
    id: "litellm-tpm",
    what: "as `litellm`, with a tokens-per-minute limit per key and model: its v3 rate limiter reserves the prompt estimate plus max_tokens and settles with the real usage, as llm-mesh's throttle does; counters in the process",
    lacks: LITELLM_LACKS,
  },
  { id: "litellm-tpm-redis", what: "as `litellm-tpm`, counters in Redis (`coordination_redis`), shared by every instance", lacks: LITELLM_LACKS },
];

interface Running extends Measured {
  stop(): Promise<void>;
  /** Checks after the measured runs that the peer did the work it stands for; a note for the report. */
  verify?(): Promise<string>;
}

export interface PeersReport {
  meta: Record<string, string>;
  settings: Record<string, unknown>;
  workloads: { id: string; description: string; bytes: number }[];
  cells: Cell[];
  summary: CellSummary[];
  /** Per peer: why it was not measured, its resident memory after the runs, module bytes, checks. */
  peers: { id: string; what: string; lacks: string; problem?: string; rssBytes?: number; module?: string; verified?: string }[];
  /** peer/workload pairs that got the longer runs. */
  longRuns: string[];
}

const duBytes = (path: string) => Number(execFileSync("du", ["-sb", path], { encoding: "utf8" }).split("\t")[0]);
const tryText = (cmd: string, argv: string[]) => {
  try {
    return execFileSync(cmd, argv, { encoding: "utf8", cwd: repoDir, stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "unknown";
  }
};

export async function runPeers(o: PeersOptions): Promise<PeersReport> {
  ensureWrk(o.log);
  envoyBinary();
  const cpuPlan = o.pin ? placement() : undefined;
  mkdirSync(join(repoDir, ".tmp"), { recursive: true });
  const runDir = mkdtempSync(join(repoDir, ".tmp", "bench-peers-"));
  const workloads = allWorkloads().filter((w) => w.id === "1k" || (!o.smoke && w.id === "1k-sse"));
  const bodyFiles = new Map(workloads.map((w) => [w.id, join(runDir, `${w.id}.json`)]));
  for (const w of workloads) writeFileSync(bodyFiles.get(w.id)!, w.body);
  const loads: number[] = [];
  const meta: Record<string, string> = {
    command: `npm run bench -- --peers${o.smoke ? " --smoke" : ""}${o.litellm ? "" : " --no-litellm"}`,
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    commit: tryText("git", ["rev-parse", "--short", "HEAD"]),
    envoy: /version: \S+\/(\d+\.\d+\.\d+)/.exec(tryText(envoyBinary(), ["--version"]))?.[1] ?? "unknown",
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? "unknown"}`,
    loadBefore: loadavg()[0].toFixed(2),
  };
  const peers: PeersReport["peers"] = PEERS.map((p) => ({ ...p }));
  const peerOf = (id: string) => peers.find((p) => p.id === id)!;
  const running = new Map<string, Running>();
  const stops: (() => Promise<unknown>)[] = [];
  const cells: Cell[] = [];
  /** peer/workload pairs whose requests take so long that they get the longer runs. */
  const slow = new Set<string>();
  const { filters, meshes } = discoverFilters();
  const upstream = await startUpstream(runDir);
  stops.push(() => stopEnvoy(upstream));
  try {
    if (cpuPlan) pin(upstream.pid, cpuPlan.upstream);
    const redis: Redis = await startRedis({ workDir: join(runDir, "redis") });
    stops.push(() => redis.stop());
    if (cpuPlan) pin(redis.pid, cpuPlan.upstream);
    const add = (id: string, peer: Running) => {
      running.set(id, peer);
      stops.push(() => peer.stop());
      if (cpuPlan) pin(peer.pid, cpuPlan.front);
    };

    o.log("starting bare Envoy and llm-mesh");
    const bare = await startFront({ id: BARE, chain: [], kind: "baseline" }, [], { upstream });
    add(BARE, { ...bare, stop: () => stopEnvoy(bare) });
    for (const id of [ONE_MODULE, THROTTLE, ONE_MODULE_LEAN]) {
      const module = [...meshes, ...filters].find((m) => m.name === id);
      const file = `build/${id === THROTTLE ? THROTTLE : ONE_MODULE}.wasm`;
      if (!module) {
        peerOf(id).problem = `${file} is not built (npm run build)`;
        continue;
      }
      const front = await startFront({ id, chain: [id], kind: id === THROTTLE ? "alone" : "chain" }, [...meshes, ...filters], { upstream });
      add(id, { ...front, stop: () => stopEnvoy(front) });
      peerOf(id).module = `${fmt(module.bytes / 1024, 1)} KiB (${file})`;
    }

    o.log("starting Envoy's own filters with envoyproxy/ratelimit and Redis");
    try {
      const { envoy, service } = await startEnvoyFilters(redis, upstream.ports.LISTEN_PORT, TOKENS_PER_MINUTE, join(runDir, "ratelimit"));
      stops.push(() => service.stop());
      if (cpuPlan) pin(service.pid, cpuPlan.upstream);
      add("envoy-filters", {
        ...envoy,
        sidePids: [service.pid, redis.pid],
        stop: () => stopEnvoy(envoy),
        verify: async () => {
          const stats = await envoy.stats();
          const stat = (name: string) => stats.get(`cluster.model.ratelimit.${name}`) ?? 0;
          let tokens = 0;
          for (const key of await redis.keys(`${DOMAIN}_*`)) tokens += (await redis.counter(key)) ?? 0;
          return `rate limit service answers: ${stat("ok")} OK, ${stat("over_limit")} over the limit, ${stat("error")} errors ` +
            `(${stat("failure_mode_allowed")} let through unchecked); ${tokens} tokens counted in Redis`;
        },
      });
      peerOf("envoy-filters").module = "none: compiled into Envoy";
    } catch (err) {
      peerOf("envoy-filters").problem = `did not start: ${(err as Error).message.split("\n")[0]}`;
    }

    const litellmIds = ["litellm", "litellm-tpm", "litellm-tpm-redis"];
    if (!o.litellm) {
      for (const id of litellmIds) peerOf(id).problem = "left out (--no-litellm)";
    } else {
      o.log("installing LiteLLM's proxy when needed (scripts/setup-litellm.sh)");
      const setup = setupLiteLlm();
      if ("problem" in setup) {
        for (const id of litellmIds) peerOf(id).problem = setup.problem;
      } else {
        o.log(`starting ${litellmIds.join(", ")}`);
        const installed = `none: Python, ${fmt(duBytes(join(repoDir, ".peers", "litellm-venv")) / 1048576, 0)} MiB installed`;
        // Each takes 15-30 s to import and start; side by side they are ready sooner.
        const started = await Promise.allSettled(litellmIds.map((id) =>
          startLiteLlm({
            bin: setup.bin,
            upstreamPort: upstream.ports.LISTEN_PORT,
            tpmLimit: id === "litellm" ? undefined : TOKENS_PER_MINUTE,
            redis: id === "litellm-tpm-redis" ? redis : undefined,
            workDir: join(runDir, id),
          })));
        started.forEach((result, i) => {
          const id = litellmIds[i];
          if (result.status === "rejected") {
            peerOf(id).problem = `did not start: ${(result.reason as Error).message.split("\n").slice(0, 3).join(" / ")}`;
            return;
          }
          const proxy = result.value;
          add(id, {
            ...proxy,
            ...(id === "litellm-tpm-redis" ? { sidePids: [redis.pid] } : {}),
            verify: id === "litellm" ? undefined : () => verifyLiteLlmLimit(proxy),
          });
          peerOf(id).module = installed;
        });
      }
    }

    for (const p of peers.filter((p) => running.has(p.id))) {
      for (const w of workloads) {
        const peer = running.get(p.id)!;
        // The first request finds code still cold; the second says how long a request takes.
        let problem = await checkOnce(peer, w);
        const t0 = Date.now();
        problem ??= await checkOnce(peer, w);
        if (Date.now() - t0 > SLOW_REQUEST_MS) slow.add(`${p.id}/${w.id}`);
        if (problem) o.log(`${p.id}/${w.id} not measured: ${problem}`);
        cells.push({ scenario: p.id, workload: w.id, load: [], lone: [], problem: problem ?? undefined });
      }
    }
    const warm = workloads[0];
    if (!o.smoke) {
      o.log(`warm-up: 1 s per proxy (${warm.id}, discarded)`);
      for (const peer of running.values()) await runWrk({ ...workloadTarget(peer, warm, bodyFiles.get(warm.id)!), connections: o.connections, seconds: 1, cpus: cpuPlan?.wrk });
    }

    // LiteLLM's worker threads come and go: the CPU of threads that ended must count too.
    const settings = { connections: o.connections, seconds: o.seconds, loneSeconds: 1, wrkCpus: cpuPlan?.wrk, cpu: processCpuNs };
    const slowSettings = { ...settings, seconds: Math.max(o.seconds, SLOW_SECONDS), loneSeconds: SLOW_LONE_SECONDS };
    for (let rep = 0; rep < o.reps; rep++) {
      for (const w of workloads) {
        const active = cells.filter((c) => c.workload === w.id && !c.problem);
        // Peers take turns, starting one later each repetition, as in the main benchmark.
        for (const cell of active.map((_, i) => active[(i + rep) % active.length])) {
          loads.push(loadavg()[0]);
          await measureCell(running.get(cell.scenario)!, upstream, w, bodyFiles.get(w.id)!, cell, slow.has(`${cell.scenario}/${w.id}`) ? slowSettings : settings);
          const last = cell.load[cell.load.length - 1];
          o.log(`rep ${rep + 1}/${o.reps} ${w.id.padEnd(6)} ${cell.scenario.padEnd(18)} ${last.rps.toFixed(0).padStart(6)} req/s  ` +
            `p50 ${(last.p50Us / 1000).toFixed(3)} ms  cpu ${last.cpuUsPerRequest.toFixed(1)} µs/req${last.sideCpuUsPerRequest === undefined ? "" : ` + ${last.sideCpuUsPerRequest.toFixed(1)} beside`}`);
        }
      }
    }
    for (const [id, peer] of running) {
      const row = peerOf(id);
      row.rssBytes = rssBytes(peer.pid);
      if (peer.verify) row.verified = await peer.verify().catch((err) => `check failed: ${(err as Error).message}`);
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  }
  rmSync(runDir, { recursive: true, force: true });
  meta.loadAfter = loadavg()[0].toFixed(2);
  meta.loadDuring = loads.length ? `${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}` : "–";
  return {
    meta,
    settings: { reps: o.reps, seconds: o.seconds, connections: o.connections, pinning: cpuPlan ? `proxy on CPU ${cpuPlan.front}; upstream, wrk, rate limit service and Redis on CPU ${cpuPlan.upstream}${cpuPlan.wrk === cpuPlan.upstream ? "" : ` and ${cpuPlan.wrk}`}` : "none" },
    workloads: workloads.map((w) => ({ id: w.id, description: w.description, bytes: Buffer.byteLength(w.body) })),
    cells,
    summary: summarize(cells),
    peers,
    longRuns: [...slow],
  };
}

/** One request more, to read the limiter's own headers: proof that the limit was applied. */
async function verifyLiteLlmLimit(proxy: Measured): Promise<string> {
  const w = allWorkloads().find((x) => x.id === "1k")!;
  const res = await fetch(proxy.url(CHAT_PATH), { method: "POST", headers: { "content-type": "application/json", authorization: AUTHORIZATION }, body: w.body });
  await res.arrayBuffer();
  // Named after the limit that matched, e.g. x-ratelimit-model_per_key-limit-tokens.
  const shown = [...res.headers].filter(([name]) => /^x-ratelimit-.*tokens$/.test(name)).map(([name, value]) => `${name}: ${value}`);
  return shown.length ? `its limiter answered ${shown.join(", ")}` : `no x-ratelimit-*-tokens headers (status ${res.status})`;
}

// ---------------------------------------------------------------- Markdown

const ms = (n: number | undefined) => fmt(n, n !== undefined && n >= 100 ? 0 : 2);
const times = (n: number | undefined) => (n === undefined ? "1.00" : fmt(n, n >= 10 ? 0 : 2));
const mib = (bytes: number | undefined) => (bytes === undefined ? "–" : `${fmt(bytes / 1048576, 0)} MiB`);

export function peersMarkdown(r: PeersReport): string {
  const s = r.settings as { reps: number; seconds: number; connections: number; pinning: string };
  const lines: string[] = [];
  lines.push("# llm-mesh and its peers");
  lines.push("");
  lines.push(
    `Generated by \`${r.meta.command}\` on ${r.meta.date} (commit ${r.meta.commit}), Envoy ${r.meta.envoy}, on ${r.meta.cpu}. ` +
      `Every proxy runs one worker against the same upstream (an Envoy answering with \`direct_response\`). wrk, 1 thread: ` +
      `${s.connections} connections for ${s.seconds} s under load, then 1 connection for 1 s (lone request); ${s.reps} repetition(s), ` +
      `medians shown; CPU pinning: ${s.pinning}. Load average (1 min) ${r.meta.loadBefore} before, ${r.meta.loadDuring} during, ` +
      `${r.meta.loadAfter} after: other work on the machine moves requests/s and latency; CPU per request is the steadiest figure.`,
  );
  lines.push("");
  lines.push(
    "CPU µs/req is the proxy's own CPU time per request under load (user and system time of the process from /proc/<pid>/stat, " +
      "ended threads included, as LiteLLM's come and go); beside is that of the services it calls " +
      "on every request (envoyproxy/ratelimit and Redis, or Redis), which the proxy's figure leaves out. Proxy busy is the share of one " +
      "core the proxy used: well under 100% means something else held it back. Memory is the proxy's resident set after the runs.",
  );
  for (const w of r.workloads) {
    lines.push("");
    lines.push(`## ${w.id}: ${w.description} (${w.bytes} bytes)`);
    lines.push("");
    const rows = r.peers.map((p) => {
      const c = r.summary.find((x) => x.scenario === p.id && x.workload === w.id);
      const problem = p.problem ?? r.cells.find((x) => x.scenario === p.id && x.workload === w.id)?.problem;
      if (!c) return [`\`${p.id}\``, `not measured: ${problem ?? "no samples"}`, "", "", "", "", "", "", "", ""];
      return [`\`${p.id}\``, fmt(c.rps, 0), ms(c.p50Ms), ms(c.p99Ms), ms(c.loneP50Ms), fmt(c.cpuUsPerRequest, 0), times(c.vsBare?.cpu),
        c.sideCpuUsPerRequest === undefined ? "–" : fmt(c.sideCpuUsPerRequest, 0), `${fmt(c.frontBusy * 100, 0)}%`, mib(p.rssBytes)];
    });
    lines.push(table(["peer", "req/s", "p50 ms", "p99 ms", "lone p50 ms", "CPU µs/req", "× bare", "beside µs/req", "proxy busy", "memory"], rows,
      ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]));
    const long = r.longRuns.filter((x) => x.endsWith(`/${w.id}`)).map((x) => `\`${x.slice(0, -w.id.length - 1)}\``);
    if (long.length) {
      lines.push("");
      lines.push(`${long.join(", ")}: over ${SLOW_REQUEST_MS} ms for one request, so ${SLOW_SECONDS} s under load and ${SLOW_LONE_SECONDS} s alone per repetition, for enough completed requests.`);
    }
  }
  lines.push("");
  lines.push("## The peers");
  lines.push("");
  lines.push(table(["peer", "what runs", "module", "what it does not do that llm-mesh does"],
    r.peers.map((p) => [`\`${p.id}\``, p.what, p.module ?? "–", p.lacks])));
  const checks = r.peers.filter((p) => p.verified);
  if (checks.length) {
    lines.push("");
    lines.push("Checked after the runs, so that no limit was measured switched off:");
    lines.push("");
    for (const p of checks) lines.push(`- \`${p.id}\`: ${p.verified}.`);
  }
  lines.push("");
  return lines.join("\n");
}
