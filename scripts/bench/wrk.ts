// The load generator: Debian's wrk, driven by post.lua. It runs as its own process (C, event loop),
// never inside the Node process that orchestrates the benchmark or anything on the request path.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AUTHORIZATION } from "./bodies.ts";

const LUA_SCRIPT = join(fileURLToPath(new URL(".", import.meta.url)), "post.lua");

export interface WrkResult {
  requests: number;
  /** Requests per second over the measured interval. */
  rps: number;
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Non-2xx/3xx answers, socket errors and timeouts: any of them makes the run invalid. */
  errors: number;
  errorDetail: Record<string, number>;
}

function hasWrk(): boolean {
  return spawnSync("sh", ["-c", "command -v wrk"], { stdio: "ignore" }).status === 0;
}

/** Installs wrk with apt-get when it is missing (the benchmark's only system dependency). */
export function ensureWrk(log: (line: string) => void): void {
  if (hasWrk()) return;
  if (process.getuid?.() !== 0) throw new Error("wrk is not installed and this is not root: run `sudo apt-get install -y wrk`");
  log("wrk not found: installing it with apt-get");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () => spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "wrk"], { stdio: "inherit", env }).status === 0;
  if (!install()) {
    execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
    if (!install()) throw new Error("apt-get install wrk failed");
  }
}

export interface WrkRun {
  url: string;
  bodyFile: string;
  /** "sse" asks the bench upstream for the streamed answer. */
  answer?: string;
  connections: number;
  seconds: number;
  /** CPUs to run wrk on (taskset list), or anywhere when absent. */
  cpus?: string;
}

export async function runWrk(run: WrkRun): Promise<WrkResult> {
  const args = ["-t1", `-c${run.connections}`, `-d${run.seconds}s`, "--timeout", "10s", "-s", LUA_SCRIPT, run.url];
  const env = { ...process.env, BENCH_BODY: run.bodyFile, BENCH_ANSWER: run.answer ?? "", BENCH_AUTHORIZATION: AUTHORIZATION };
  const [cmd, argv] = run.cpus ? ["taskset", ["-c", run.cpus, "wrk", ...args]] : ["wrk", args];
  const child = spawn(cmd, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c));
  child.stderr.on("data", (c: Buffer) => (out += c));
  const code = await new Promise<number | null>((done) => child.once("close", done));
  const line = /^BENCH_RESULT (.*)$/m.exec(out);
  if (code !== 0 || !line) throw new Error(`wrk ${args.join(" ")} failed (exit ${code}):\n${out}`);
  const parsed = JSON.parse(line[1]);
  const errors = Object.values(parsed.errors as Record<string, number>).reduce((a, b) => a + b, 0);
  return {
    requests: parsed.requests,
    rps: parsed.requests / (parsed.duration_us / 1e6),
    latencyUs: parsed.latency_us,
    errors,
    errorDetail: parsed.errors,
  };
}
