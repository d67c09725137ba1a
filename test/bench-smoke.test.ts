// `npm run bench` end to end in its smoke mode (a few seconds of load): real Envoys, wrk, the
// report files. The numbers are not checked (this machine's load moves them); that every part ran
// and produced a coherent report is.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { parseReport, perfAvailable } from "../scripts/bench/perf.ts";

const filtersBuilt = readdirSync(join(repoDir, "build")).filter((f) => f.endsWith(".wasm") && f !== "kernels.wasm");

test("npm run bench -- --smoke measures bare Envoy and the built filters and writes the report", { timeout: 180_000 }, async () => {
  const out = mkdtempSync(join(repoDir, ".tmp", "bench-smoke-test-"));
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/bench.ts", "--smoke", "--out", out], { cwd: repoDir, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (c: Buffer) => (output += c));
  child.stderr.on("data", (c: Buffer) => (output += c));
  const code = await new Promise<number | null>((done) => child.once("close", done));
  assert.equal(code, 0, `bench --smoke failed:\n${output}`);

  assert.ok(existsSync(join(out, "smoke.md")) && existsSync(join(out, "smoke.json")), "the report files are written");
  const report = JSON.parse(readFileSync(join(out, "smoke.json"), "utf8"));
  const bare = report.summary.find((s: { scenario: string; workload: string }) => s.scenario === "bare" && s.workload === "1k");
  assert.ok(bare?.rps > 0 && bare.cpuUsPerRequest > 0 && bare.loneP50Ms > 0, "bare Envoy was measured");
  assert.deepEqual(report.cells.filter((c: { problem?: string }) => c.problem).map((c: { problem: string }) => c.problem), [], "no scenario failed its check request");
  if (filtersBuilt.length > 0) {
    const first = filtersBuilt.includes("admission.wasm") ? "admission" : report.modules[0].name;
    const measured = report.summary.find((s: { scenario: string }) => s.scenario === first);
    assert.ok(measured?.vsBare && measured.vsBare.cpu > 0, `${first} was measured against bare Envoy`);
    assert.ok(report.memory.some((m: { perVm?: number }) => typeof m.perVm === "number"), "memory per VM was computed");
    assert.ok(report.hostCalls.some((h: { callbacks: Record<string, number> }) => (h.callbacks.proxy_on_request_headers ?? 0) >= 1), "host calls were counted");
  }
  assert.ok(report.kernels.some((k: { kernel: string; mbPerSecond: number }) => k.kernel === "estimateTokens" && k.mbPerSecond > 0), "the estimator micro-benchmark ran");
  if (perfAvailable()) {
    const split = report.cpuSplits.find((c: { scenario: string; workload: string }) => c.scenario === "bare" && c.workload === "1k");
    assert.ok(split?.samples > 0, `bare Envoy's CPU was profiled: ${report.cpuSplitMissing}`);
    const total = Object.values(split.shares as Record<string, number>).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(total - 1) < 1e-9 && split.shares.envoy > 0, `shares ${JSON.stringify(split.shares)}`);
    if (filtersBuilt.length > 0) {
      const all = report.cpuSplits.find((c: { scenario: string }) => c.scenario === "all");
      assert.ok(all?.shares.jit > 0, "with Wasm filters some samples are in V8's generated code");
    }
  } else {
    assert.match(report.cpuSplitMissing, /perf is not installed/);
  }
  if (existsSync(join(repoDir, "build", "mesh.wasm"))) {
    const replayed = report.moduleProfiles.find((m: { scenario: string; workload: string }) => m.scenario === "mesh" && m.workload === "1k");
    assert.ok(replayed?.moduleUsPerRequest > 0 && replayed.functions.some((f: { name: string }) => f.name.startsWith("assembly/")), "the one module's own code was profiled by function");
    // The profile drives the module with fixed host answers; it profiles what Envoy runs only if
    // the module then makes the calls it makes in Envoy. Left out: the clock, which ticks read too,
    // metric definitions, which the first requests after a start make (Envoy's count covers a few),
    // and metric increments, which a tick sends in batches (assembly/host/metric-batch.ts): whether
    // one falls among the few requests Envoy's count covers is down to timing.
    const counted = report.hostCalls.find((h: { scenario: string; workload: string }) => h.scenario === "mesh" && h.workload === "1k");
    if (counted) {
      const timed = new Set(["proxy_get_current_time_nanoseconds", "proxy_define_metric", "proxy_increment_metric"]);
      const kinds = (calls: Record<string, number>) => Object.fromEntries(Object.entries(calls).filter(([k]) => !timed.has(k)).map(([k, n]) => [k, Math.round(n)]).sort());
      assert.deepEqual(kinds(replayed.hostCallsPerRequest), kinds(counted.hostCalls), "the profiled module makes the host calls it makes in Envoy");
    }
  }
  const markdown = readFileSync(join(out, "smoke.md"), "utf8");
  for (const section of ["## Targets", "## Throughput and latency under load", "## Latency of a lone request", "## Modules", "## Memory per Wasm VM", "## Where the proxy's CPU goes", "## The one module's own code, function by function"]) {
    assert.ok(markdown.includes(section), `the report has ${section}`);
  }
  rmSync(out, { recursive: true, force: true });
});

test("the CPU profile sorts perf's shared objects by the home of their code", () => {
  const text = [
    "# Samples: 10K of event 'cpu-clock:ppp'",
    "    32.02%          3174  [JIT] tid 18310  ",
    "    11.21%          1111  [kernel.kallsyms]",
    "     0.22%            22  [vdso]           ",
    "    53.90%          5343  envoy            ",
    "     2.65%           263  libc.so.6        ",
    "",
  ].join("\n");
  assert.deepEqual(parseReport(text), { samples: 9913, byHome: { envoy: 5343, jit: 3174, kernel: 1133, libraries: 263 } });
});
