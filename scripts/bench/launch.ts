// Runs Envoy on a benchmark config. The test harness starts scenarios exactly as envoy/<name>.yaml
// renders; the benchmark's proxies are envoy/bench.yaml plus each scenario's filters, so it renders
// the template with the harness (ports, placeholders, scratch directory), edits the result, and runs
// that. Envoy dies with the benchmark (setpriv --pdeathsig, and a kill on exit).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { envoyBinary, repoDir } from "../../test/harness/envoy-bin.ts";
import { renderScenario, tail, type Vars } from "../../test/harness/envoy.ts";

export interface RunningEnvoy {
  pid: number;
  ports: Record<string, number>;
  tmpDir: string;
  url(path: string, portVar?: string): string;
  /** Everything Envoy logged so far. */
  log(): string;
  stats(): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

export interface LaunchOptions {
  concurrency: number;
  logLevel: string;
  /** e.g. "wasm:trace"; none when empty. */
  componentLogLevel: string;
}

const running = new Set<ChildProcess>();
let exitHook = false;

export async function launchEnvoy(template: string, vars: Vars, edit: (yaml: string) => string, options: LaunchOptions): Promise<RunningEnvoy> {
  const rendered = await renderScenario(template, vars);
  const config = join(rendered.tmpDir, "envoy.yaml");
  writeFileSync(config, edit(rendered.yaml));
  const args = ["-c", config, "--concurrency", String(options.concurrency), "--disable-hot-restart", "-l", options.logLevel];
  if (options.componentLogLevel) args.push("--component-log-level", options.componentLogLevel);
  const setpriv = spawnSync("setpriv", ["--version"], { stdio: "ignore" }).status === 0;
  const child = setpriv ? spawn("setpriv", ["--pdeathsig", "KILL", envoyBinary(), ...args], { cwd: repoDir }) : spawn(envoyBinary(), args, { cwd: repoDir });
  running.add(child);
  if (!exitHook) {
    exitHook = true;
    process.on("exit", () => running.forEach((c) => c.kill("SIGKILL")));
  }
  let log = "";
  child.stdout!.on("data", (c: Buffer) => (log += c));
  child.stderr!.on("data", (c: Buffer) => (log += c));
  const exited = new Promise<string>((done) => {
    child.once("error", (err) => done(`failed to spawn: ${err.message}`));
    child.once("close", (code, signal) => done(signal ? `killed by ${signal}` : `exited with code ${code}`));
  }).then((why) => {
    running.delete(child);
    return why;
  });
  let exitReason: string | undefined;
  void exited.then((why) => (exitReason = why));

  const admin = (path: string) => `http://127.0.0.1:${rendered.ports.ADMIN_PORT}${path}`;
  const stop = async () => {
    if (exitReason) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  };
  const envoy: RunningEnvoy = {
    pid: child.pid ?? -1,
    ports: rendered.ports,
    tmpDir: rendered.tmpDir,
    url: (path, portVar = "LISTEN_PORT") => `http://127.0.0.1:${rendered.ports[portVar]}${path}`,
    log: () => log,
    async stats() {
      const body = (await (await fetch(admin("/stats?format=json"))).json()) as { stats?: { name?: string; value?: unknown }[] };
      return new Map((body.stats ?? []).filter((s) => typeof s.value === "number").map((s) => [s.name!, s.value as number]));
    },
    stop,
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exitReason) {
      // The error carries the log tail; nothing else in the scratch directory explains more.
      rmSync(rendered.tmpDir, { recursive: true, force: true });
      throw new Error(`envoy (${template}) ${exitReason} before it was ready; log tail:\n${tail(log, 40)}`);
    }
    try {
      const res = await fetch(admin("/ready"), { signal: AbortSignal.timeout(1000) });
      await res.text();
      if (res.status === 200) return envoy;
    } catch {
      // the admin listener is not up yet
    }
    if (Date.now() > deadline) {
      await stop();
      rmSync(rendered.tmpDir, { recursive: true, force: true });
      throw new Error(`envoy (${template}) not ready after 30 s; log tail:\n${tail(log, 40)}`);
    }
    await new Promise((done) => setTimeout(done, 100));
  }
}
