// `npm run soak [-- --requests N]`: a long run of mixed traffic through every llm-mesh filter on 2
// Envoy workers (envoy/soak.yaml) in front of a fixed-answer upstream (envoy/soak-upstream.yaml),
// driven by wrk in its own process. Between slices of load it samples Envoy's resident memory, the
// Wasm linear memory of every VM, the allocator's heap and the number of llm-mesh shared-data keys
// (counted by scripts/soak/shared-keys-probe.ts), then reports whether they stayed flat after warm-up.
// Not part of `npm test`: a million requests take several minutes.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, startEnvoy } from "../tooling/envoy.ts";
import { wasmMemory } from "../tooling/wasm-memory.ts";
import { rssBytes } from "./bench/proc.ts";
import { ALLOWED_MODELS, lit, objectText, requestMembers, type Shape } from "../tooling/fuzz/bodies.ts";
import { ADMISSION_CONFIG, METRICS_CONFIG, ROUTER_CONFIG } from "../tooling/fuzz/mesh.ts";
import { Rng } from "../tooling/fuzz/rng.ts";

const HELP = `usage: npm run soak -- [--requests N] [options]

  --requests N      requests to send (default 1000000)
  --slice S         seconds of load between samples (default 10)
  --connections C   wrk connections (default 32)
  --warmup F        share of the requests counted as warm-up (default 0.2)
  --keep            keep the scratch directory (.tmp/soak-*) with both Envoy logs
`;

const { values: args } = parseArgs({
  options: {
    requests: { type: "string", default: "1000000" },
    slice: { type: "string", default: "10" },
    connections: { type: "string", default: "32" },
    warmup: { type: "string", default: "0.2" },
    keep: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (args.help) {
  console.log(HELP);
  process.exit(0);
}
const REQUESTS = Number(args.requests);
const SLICE_S = Number(args.slice);
const CONNECTIONS = Number(args.connections);
const WARMUP = Number(args.warmup);
for (const [name, value, ok] of [
  ["--requests", REQUESTS, REQUESTS >= 1],
  ["--slice", SLICE_S, SLICE_S >= 1],
  ["--connections", CONNECTIONS, CONNECTIONS >= 1],
  ["--warmup", WARMUP, WARMUP >= 0 && WARMUP < 1],
] as const) {
  if (!Number.isFinite(value) || !ok) {
    console.error(`${name}: invalid value\n${HELP}`);
    process.exit(2);
  }
}

// Many tenants, more than the throttle's key slots, so slots are claimed, idled and reused.
const TENANTS = 3000;
const KEY_SLOTS = 1024;
// The throttle's record keys carry its record layout's version (assembly/throttle/policy.ts).
const THROTTLE_RECORD_LAYOUT = Number(/RECORD_LAYOUT: i32 = (\d+)/.exec(readFileSync(join(repoDir, "assembly", "throttle", "policy.ts"), "utf8"))![1]);
const THROTTLE_CONFIG = {
  rules: [
    { name: "tight", match: { headers: [{ name: "x-tenant", exact: "tight" }] }, key: ["global"], limits: { requests_per_second: 50 }, action: "reject" },
    { name: "tenants", key: ["header:x-tenant"], key_slots: KEY_SLOTS, limits: { requests_per_second: 1_000_000, tokens_per_minute: 1_000_000_000_000, max_in_flight: 100_000 }, action: "reject" },
  ],
};
/** Every shared-data key the filters may create under these configs. */
const PROBE_CONFIG = {
  keys: ["llm-mesh:create-lock", "llm-metrics:label-slots:model", "llm-metrics:label-slots:tenant"],
  ranges: THROTTLE_CONFIG.rules.map((rule) => ({ prefix: `llm-throttle:v${THROTTLE_RECORD_LAYOUT}:${rule.name}:`, count: rule.key_slots ?? KEY_SLOTS })),
};

// ---------------------------------------------------------------- the request mix

interface SoakRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

const PATHS: Record<Shape, string> = {
  "openai.chat": "/v1/chat/completions",
  "openai.completions": "/v1/completions",
  "openai.embeddings": "/v1/embeddings",
  "anthropic.messages": "/v1/messages",
};

function soakRequest(rng: Rng, index: number): SoakRequest {
  const headers: Record<string, string> = { "content-type": "application/json", "x-tenant": `tenant-${index % TENANTS}` };
  const kind = rng.weighted<string>([
    [35, "chat"], [15, "stream"], [10, "anthropic"], [5, "embeddings"], [5, "completions"], [8, "unknown-model"], [5, "invalid-json"],
    [3, "too-long"], [5, "throttled"], [4, "forged"], [5, "other-path"],
  ]);
  const shape: Shape = kind === "anthropic" ? "anthropic.messages" : kind === "embeddings" ? "openai.embeddings" : kind === "completions" ? "openai.completions" : "openai.chat";
  const members = requestMembers(rng, shape).filter(([k]) => k !== lit("model") && k !== lit("stream") && k !== lit("stream_options"));
  const model = shape === "anthropic.messages" ? "claude-3-5-haiku-20241022" : shape === "openai.embeddings" ? "text-embedding-3-small" : rng.pick(ALLOWED_MODELS.slice(0, 4));
  members.push([lit("model"), lit(kind === "unknown-model" ? `model-${rng.int(500)}` : model)]);
  if (kind === "stream") {
    members.push([lit("stream"), "true"], [lit("stream_options"), '{"include_usage":true}']);
    headers["x-soak-answer"] = "sse";
  }
  if (kind === "too-long") {
    const at = members.findIndex(([k]) => k === lit("messages"));
    members[at] = [lit("messages"), lit([{ role: "user", content: "a mesh of tokens ".repeat(3000) }])];
  }
  if (kind === "throttled") headers["x-tenant"] = "tight";
  if (kind === "forged") Object.assign(headers, { "x-llm-model": "forged", "x-llm-route": "canary", "x-llm-prompt-tokens": "1" });
  let body = objectText(members);
  if (kind === "invalid-json") body = body.slice(0, Math.max(1, rng.int(body.length)));
  if (kind === "other-path") return { method: "GET", path: "/v1/models", headers, body: "" };
  return { method: "POST", path: PATHS[shape], headers, body };
}

/** A Lua string literal holding any bytes. */
function luaString(text: string): string {
  let out = '"';
  for (const byte of Buffer.from(text, "utf8")) {
    out += byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c ? String.fromCharCode(byte) : `\\${byte.toString().padStart(3, "0")}`;
  }
  return `${out}"`;
}

/** A wrk script that cycles through the requests and tallies the answers' statuses per thread. */
function wrkScript(requests: SoakRequest[]): string {
  const table = requests
    .map((r) => `{${luaString(r.method)},${luaString(r.path)},{${Object.entries(r.headers).map(([k, v]) => `[${luaString(k)}]=${luaString(v)}`).join(",")}},${luaString(r.body)}}`)
    .join(",\n");
  return `-- Generated by scripts/soak.ts.
local requests = {
${table}
}
local formatted = {}
local next_index = 0
statuses = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for i, r in ipairs(requests) do
    formatted[i] = wrk.format(r[1], r[2], r[3], r[4])
  end
  next_index = math.random(#formatted)
end

function request()
  next_index = next_index % #formatted + 1
  return formatted[next_index]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do totals[status] = (totals[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(totals) do table.insert(parts, string.format('"%d":%d', status, n)) end
  io.write("SOAK_STATUSES {" .. table.concat(parts, ",") .. "}\\n")
end
`;
}

// ---------------------------------------------------------------- measuring

interface Sample {
  at: number;
  requests: number;
  rps: number;
  rssMb: number;
  wasmMb: number;
  wasmResidentMb: number;
  heapMb: number;
  vms: number;
  keys: number;
  inFlight: number;
}

async function sample(envoy: EnvoyHandle, requests: number, rps: number): Promise<Sample> {
  const stats = await envoy.stats();
  const wasm = wasmMemory(envoy.pid);
  const inFlight = [...stats].filter(([n]) => /^wasmcustom\..*(in_flight|waiting|tokens_reserved|active_requests)/.test(n)).reduce((sum, [, v]) => sum + v, 0);
  return {
    at: Date.now(),
    requests,
    rps,
    rssMb: rssBytes(envoy.pid) / 1048576,
    wasmMb: wasm.sizeKb / 1024,
    wasmResidentMb: wasm.residentKb / 1024,
    heapMb: (stats.get("server.memory_allocated") ?? NaN) / 1048576,
    vms: wasm.vms,
    keys: stats.get("wasmcustom.llm_soak_shared_data_keys") ?? NaN,
    inFlight,
  };
}

async function runWrk(url: string, script: string, seconds: number): Promise<{ requests: number; statuses: Record<string, number> }> {
  const child = spawn("wrk", ["-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--timeout", "10s", "-s", script, url], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c));
  child.stderr.on("data", (c: Buffer) => (out += c));
  const code = await new Promise<number | null>((done) => child.once("close", done));
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const statuses = /^SOAK_STATUSES (.*)$/m.exec(out);
  if (code !== 0 || !Number.isFinite(requests) || !statuses) throw new Error(`wrk failed (exit ${code}):\n${out}`);
  return { requests, statuses: JSON.parse(statuses[1]) };
}

// ---------------------------------------------------------------- the run

const fixed = (n: number, digits = 1) => n.toFixed(digits).padStart(8);

async function main(): Promise<number> {
  try {
    execFileSync("wrk", ["--version"], { stdio: "ignore" });
  } catch (err) {
    // wrk prints its usage and exits 1 for --version; only a missing binary is an error.
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new Error("wrk is not installed: apt-get install wrk");
  }
  const scratch = join(repoDir, ".tmp", `soak-${process.pid}`);
  mkdirSync(scratch, { recursive: true });
  const probe = join(scratch, "shared-keys-probe.wasm");
  console.log("building the shared-data probe (scripts/soak/shared-keys-probe.ts)...");
  execFileSync(join(repoDir, "node_modules", ".bin", "asc"), ["scripts/soak/shared-keys-probe.ts", "--config", "asconfig.json", "--target", "release", "--outFile", probe], { cwd: repoDir, stdio: "inherit" });

  const rng = new Rng(20_240_601);
  const requests = Array.from({ length: 4000 }, (_, i) => soakRequest(rng, i));
  const script = join(scratch, "soak.lua");
  writeFileSync(script, wrkScript(requests));

  const bootstrap = [{
    name: "envoy.bootstrap.wasm",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
      singleton: true,
      config: {
        name: "llm-soak-probe",
        root_id: "llm-soak-probe",
        configuration: { "@type": "type.googleapis.com/google.protobuf.StringValue", value: JSON.stringify(PROBE_CONFIG) },
        vm_config: { vm_id: "llm-mesh", runtime: "envoy.wasm.runtime.v8", code: { local: { filename: probe } } },
      },
    },
  }];

  const upstream = await startEnvoy({ scenario: "soak-upstream", concurrency: 1, componentLogLevel: "" });
  let envoy: EnvoyHandle | undefined;
  try {
    envoy = await startEnvoy({
      scenario: "soak",
      vars: {
        UPSTREAM_PORT: upstream.ports.LISTEN_PORT,
        ADMISSION_CONFIG,
        THROTTLE_CONFIG,
        METRICS_CONFIG: { ...METRICS_CONFIG, max_tenants: 50 },
        ROUTER_CONFIG,
        BOOTSTRAP_EXTENSIONS: JSON.stringify(bootstrap),
      },
      concurrency: 2,
      componentLogLevel: "wasm:info",
    });
    const url = envoy.url("/");
    console.log(`soak: ${REQUESTS} requests, ${CONNECTIONS} connections, ${SLICE_S} s slices; Envoy pid ${envoy.pid} (2 workers), upstream pid ${upstream.pid}`);
    console.log(`${"elapsed s".padStart(9)} ${"requests".padStart(9)} ${"req/s".padStart(8)} ${"RSS MB".padStart(8)} ${"wasm MB".padStart(8)} ${"(res.)".padStart(8)} ${"heap MB".padStart(8)} ${"VMs".padStart(4)} ${"keys".padStart(5)} ${"busy".padStart(5)}`);
    const started = Date.now();
    const samples: Sample[] = [await sample(envoy, 0, 0)];
    const statuses: Record<string, number> = {};
    let sent = 0;
    const print = (s: Sample) =>
      console.log(`${fixed((s.at - started) / 1000, 0).padStart(9)} ${String(s.requests).padStart(9)} ${fixed(s.rps, 0)} ${fixed(s.rssMb)} ${fixed(s.wasmMb)} ${fixed(s.wasmResidentMb)} ${fixed(s.heapMb)} ${String(s.vms).padStart(4)} ${String(s.keys).padStart(5)} ${String(s.inFlight).padStart(5)}`);
    print(samples[0]);
    while (sent < REQUESTS) {
      const left = REQUESTS - sent;
      const lastRps = samples.at(-1)!.rps || 1000;
      const seconds = Math.max(1, Math.min(SLICE_S, Math.ceil(left / lastRps)));
      const run = await runWrk(url, script, seconds);
      sent += run.requests;
      for (const [status, n] of Object.entries(run.statuses)) statuses[status] = (statuses[status] ?? 0) + n;
      // Let the last streams finish so the busy gauges read an idle proxy.
      await new Promise((done) => setTimeout(done, 300));
      const s = await sample(envoy, sent, run.requests / seconds);
      samples.push(s);
      print(s);
    }
    const seconds = (Date.now() - started) / 1000;

    const warm = samples.filter((s) => s.requests >= WARMUP * sent);
    const first = warm[0];
    const last = samples.at(-1)!;
    const spread = (pick: (s: Sample) => number) => {
      const values = warm.map(pick);
      return { first: pick(first), last: pick(last), min: Math.min(...values), max: Math.max(...values) };
    };
    const rows: Array<[string, ReturnType<typeof spread>, number]> = [
      ["Envoy RSS (MB)", spread((s) => s.rssMb), Math.max(8, 0.1 * first.rssMb)],
      ["Wasm linear memory, all VMs (MB)", spread((s) => s.wasmMb), 1],
      ["Wasm memory resident (MB)", spread((s) => s.wasmResidentMb), 1],
      ["allocator heap (MB)", spread((s) => s.heapMb), Math.max(4, 0.1 * first.heapMb)],
      ["shared-data keys", spread((s) => s.keys), 0],
    ];
    console.log(`\n${sent} requests in ${seconds.toFixed(0)} s (${Math.round(sent / seconds)}/s); answers: ${Object.entries(statuses).sort().map(([k, v]) => `${k} ${v}`).join(", ")}`);
    console.log(`after warm-up (from request ${first.requests}, ${warm.length} samples):`);
    let flat = true;
    for (const [name, { first: a, last: b, min, max }, allowed] of rows) {
      const ok = max - min <= allowed || b - a <= allowed;
      flat &&= ok;
      console.log(`  ${name.padEnd(34)} first ${fixed(a)}  last ${fixed(b)}  min ${fixed(min)}  max ${fixed(max)}  ${ok ? "flat" : `GREW (allowed ${allowed.toFixed(1)})`}`);
    }
    const busy = last.inFlight;
    console.log(`  in-flight gauges at the end: ${busy}; Wasm VMs: ${last.vms}`);
    const failures = envoy.log().split("\n").filter((l) => /Function: \S+ failed|wasm log.*abort|VM failed/.test(l));
    if (failures.length) console.log(`  VM failures in Envoy's log: ${failures.length}, e.g. ${failures[0]}`);
    const verdict = flat && busy === 0 && failures.length === 0;
    console.log(verdict ? "verdict: flat" : "verdict: NOT flat (see above)");
    return verdict ? 0 : 1;
  } finally {
    await envoy?.stop();
    await upstream.stop();
    if (!args.keep) {
      rmSync(scratch, { recursive: true, force: true });
      if (envoy) rmSync(envoy.tmpDir, { recursive: true, force: true });
      rmSync(upstream.tmpDir, { recursive: true, force: true });
    } else {
      console.log(`kept ${scratch}${envoy ? `, ${envoy.tmpDir}` : ""}, ${upstream.tmpDir}`);
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
