// Starts the real Envoy for one scenario (envoy/<scenario>.yaml) and gives tests a handle on it:
// resolved ports, URLs, the captured log, admin stats and a clean stop.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { EventEmitter } from "node:events";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { envoyBinary, repoDir } from "./envoy-bin.ts";

export type VarValue = string | number | object;
export type Vars = Record<string, VarValue>;

export interface RenderedScenario {
  yaml: string;
  /** Every *_PORT value of the scenario, given or allocated. */
  ports: Record<string, number>;
  /** The rendered config file. */
  path: string;
  /** Per-run scratch dir ({{TMP_DIR}}); the rendered config and Envoy's log live here too. */
  tmpDir: string;
}

export interface StartEnvoyOptions {
  scenario: string;
  vars?: Vars;
  concurrency?: number;
  logLevel?: string;
  componentLogLevel?: string;
  readyTimeoutMs?: number;
  /** Changes the rendered config before Envoy reads it (the benchmark adds its scenario's filters). */
  edit?: (yaml: string) => string;
}

export interface EnvoyHandle {
  pid: number;
  ports: Record<string, number>;
  configPath: string;
  logPath: string;
  tmpDir: string;
  url(path: string, portVar?: string): string;
  adminUrl(path: string): string;
  log(): string;
  /** Waits until the log (from character offset `from`) matches; rejects with the log tail on timeout. */
  waitForLog(regex: RegExp, timeoutMs?: number, from?: number): Promise<RegExpExecArray>;
  stats(): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

const envoyDir = join(repoDir, "envoy");
const tmpRoot = join(repoDir, ".tmp");
const PLACEHOLDER = /\{\{([A-Za-z0-9_]+)\}\}/g;

// ---------------------------------------------------------------- rendering

/** Distinct free loopback ports; all sockets stay open until the last is read so none repeats. */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((ok, fail) => {
        server.once("error", fail);
        server.listen(0, "127.0.0.1", () => ok());
      });
    }
    return servers.map((s) => (s.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((done) => s.close(done))));
  }
}

/** The plugin configuration goes into a YAML double-quoted string; JSON string syntax is valid there. */
const yamlQuoted = (text: string) => JSON.stringify(text);

function defaultPluginConfig(name: string): string {
  const base = name.slice(0, -"_CONFIG".length).toLowerCase();
  const candidates = [`${base}.json`, `${base.replaceAll("_", "-")}.json`].map((f) => join(envoyDir, "plugin-config", f));
  const file = candidates.find((f) => existsSync(f));
  if (!file) throw new Error(`placeholder {{${name}}} has no value and no default file ${candidates[0]}`);
  try {
    return JSON.stringify(JSON.parse(readFileSync(file, "utf8")));
  } catch (err) {
    throw new Error(`default for {{${name}}}: ${file} is not valid JSON: ${(err as Error).message}`);
  }
}

function renderValue(name: string, value: VarValue): string {
  if (name.endsWith("_CONFIG")) {
    // A string is taken as the plugin's config text verbatim, so tests can hand Envoy broken JSON.
    return yamlQuoted(typeof value === "string" ? value : JSON.stringify(value));
  }
  if (typeof value === "object") throw new Error(`{{${name}}}: only *_CONFIG placeholders take objects`);
  return String(value);
}

export async function renderScenario(scenario: string, vars: Vars = {}): Promise<RenderedScenario> {
  const template = readFileSync(join(envoyDir, `${scenario}.yaml`), "utf8");
  const names = new Set([...template.matchAll(PLACEHOLDER)].map((m) => m[1]));

  mkdirSync(tmpRoot, { recursive: true });
  const tmpDir = mkdtempSync(join(tmpRoot, `${scenario}-`));
  const values: Vars = { BUILD_DIR: join(repoDir, "build"), REPO_DIR: repoDir, TMP_DIR: tmpDir, ...vars };

  const portNames = [...new Set([...names, ...Object.keys(vars)])].filter((n) => n.endsWith("_PORT"));
  const unset = portNames.filter((n) => values[n] === undefined);
  const allocated = await freePorts(unset.length);
  unset.forEach((n, i) => (values[n] = allocated[i]));
  for (const name of names) {
    if (values[name] === undefined && name.endsWith("_CONFIG")) values[name] = defaultPluginConfig(name);
  }
  const missing = [...names].filter((n) => values[n] === undefined);
  if (missing.length) throw new Error(`scenario ${scenario}: no value for ${missing.map((n) => `{{${n}}}`).join(", ")}`);

  const rendered = new Map([...names].map((n) => [n, renderValue(n, values[n])]));
  const yaml = template.replace(PLACEHOLDER, (_, name: string) => rendered.get(name)!);
  const ports = Object.fromEntries(portNames.map((n) => [n, Number(values[n])]));
  const path = join(tmpDir, `${scenario}.yaml`);
  writeFileSync(path, yaml);
  return { yaml, ports, path, tmpDir };
}

// ---------------------------------------------------------------- process tracking

const children = new Set<ChildProcess>();
let cleanupInstalled = false;

function killAllChildren(): void {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on("exit", killAllChildren);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = () => {
      killAllChildren();
      process.off(signal, onSignal);
      // Keep the signal's usual effect unless someone else (e.g. the test runner) handles it.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

// A test process killed with SIGKILL runs no handlers; setpriv --pdeathsig makes the kernel kill
// Envoy when its parent dies, so a crashed test run still leaves no proxy holding ports.
let setprivAvailable: boolean | undefined;
function launcher(bin: string, args: string[]): [string, string[]] {
  setprivAvailable ??= spawnSync("setpriv", ["--version"], { stdio: "ignore" }).status === 0;
  return setprivAvailable ? ["setpriv", ["--pdeathsig", "KILL", bin, ...args]] : [bin, args];
}

// ---------------------------------------------------------------- running

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export function tail(text: string, lines = 150): string {
  return text.split("\n").slice(-lines - 1).join("\n");
}

function parseStats(body: string): Map<string, number> {
  const stats = new Map<string, number>();
  try {
    for (const entry of JSON.parse(body).stats ?? []) {
      if (typeof entry?.name === "string" && typeof entry.value === "number") stats.set(entry.name, entry.value);
    }
    return stats;
  } catch {
    // Text format: "name: value" for counters and gauges; histogram lines don't parse as numbers.
    for (const line of body.split("\n")) {
      const m = /^(\S+): (-?\d+(?:\.\d+)?)$/.exec(line.trim());
      if (m) stats.set(m[1], Number(m[2]));
    }
    return stats;
  }
}

export async function startEnvoy(options: StartEnvoyOptions): Promise<EnvoyHandle> {
  const { scenario, vars, concurrency = 2, logLevel = "info", componentLogLevel = "wasm:debug" } = options;
  const readyTimeoutMs = options.readyTimeoutMs ?? 20_000;
  const rendered = await renderScenario(scenario, vars);
  if (options.edit) writeFileSync(rendered.path, options.edit(rendered.yaml));
  const adminPort = rendered.ports.ADMIN_PORT;
  if (!adminPort) throw new Error(`scenario ${scenario} has no {{ADMIN_PORT}}; the harness needs it for readiness`);

  const args = ["-c", rendered.path, "--concurrency", String(concurrency), "--disable-hot-restart", "-l", logLevel];
  if (componentLogLevel) args.push("--component-log-level", componentLogLevel);
  const [cmd, argv] = launcher(envoyBinary(), args);

  installCleanup();
  const logPath = join(rendered.tmpDir, "envoy.log");
  const logFile = createWriteStream(logPath);
  const child = spawn(cmd, argv, { cwd: repoDir, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);

  let logText = "";
  const events = new EventEmitter();
  const onData = (chunk: Buffer) => {
    logText += chunk.toString("utf8");
    logFile.write(chunk);
    events.emit("data");
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);

  let exitInfo: string | undefined;
  const exited = new Promise<void>((done) => {
    child.once("error", (err) => {
      exitInfo = `failed to spawn: ${err.message}`;
      children.delete(child);
      logFile.end();
      done();
    });
    child.once("close", (code, signal) => {
      exitInfo = signal ? `killed by ${signal}` : `exited with code ${code}`;
      children.delete(child);
      logFile.end();
      done();
    });
  });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (exitInfo) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    })();
    return stopping;
  };

  const adminUrl = (path: string) => `http://127.0.0.1:${adminPort}${path}`;
  const handle: EnvoyHandle = {
    pid: child.pid ?? -1,
    ports: rendered.ports,
    configPath: rendered.path,
    logPath,
    tmpDir: rendered.tmpDir,
    adminUrl,
    url(path, portVar = "LISTEN_PORT") {
      const port = rendered.ports[portVar];
      if (!port) throw new Error(`scenario ${scenario} has no port ${portVar} (has ${Object.keys(rendered.ports).join(", ")})`);
      return `http://127.0.0.1:${port}${path}`;
    },
    log: () => logText,
    waitForLog(regex, timeoutMs = 5000, from = 0) {
      // A /g or /y regex carries lastIndex between calls; a plain copy searches from the start each time.
      const re = new RegExp(regex.source, regex.flags.replace(/[gy]/g, ""));
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(logText.slice(from));
          if (m) finish(() => resolve(m));
        };
        const timer = setTimeout(
          () => finish(() => reject(new Error(`no log line matched ${regex} within ${timeoutMs} ms; log tail:\n${tail(logText, 40)}`))),
          timeoutMs,
        );
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          events.off("data", check);
          settle();
        };
        events.on("data", check);
        check();
      });
    },
    async stats() {
      const res = await fetch(adminUrl("/stats?format=json"));
      return parseStats(await res.text());
    },
    stop,
  };

  const deadline = Date.now() + readyTimeoutMs;
  while (true) {
    if (exitInfo) {
      throw new Error(`envoy (${scenario}) ${exitInfo} before it was ready; log ${logPath}, tail:\n${tail(logText, 60)}`);
    }
    try {
      const res = await fetch(adminUrl("/ready"), { signal: AbortSignal.timeout(1000) });
      await res.text();
      if (res.status === 200) return handle;
    } catch {
      // admin listener not up yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`envoy (${scenario}) not ready after ${readyTimeoutMs} ms; log ${logPath}, tail:\n${tail(logText, 60)}`);
    }
    await sleep(100);
  }
}

/**
 * Values a template documents for placeholders its callers must set, as header lines
 * `# example {{NAME}}: value`; they let a scenario be validated on its own.
 */
function exampleVars(scenario: string): Vars {
  const template = readFileSync(join(envoyDir, `${scenario}.yaml`), "utf8");
  return Object.fromEntries([...template.matchAll(/^# example \{\{([A-Za-z0-9_]+)\}\}: (.*)$/gm)].map((m) => [m[1], m[2].trim()]));
}

/** Renders the scenario with its defaults and asks Envoy to validate it without serving. */
export async function validateScenario(scenario: string, vars?: Vars): Promise<{ ok: boolean; output: string }> {
  let rendered: RenderedScenario;
  try {
    rendered = await renderScenario(scenario, { ...exampleVars(scenario), ...vars });
  } catch (err) {
    return { ok: false, output: (err as Error).message };
  }
  const [cmd, argv] = launcher(envoyBinary(), ["--mode", "validate", "-c", rendered.path, "-l", "warning"]);
  const run = spawn(cmd, argv, { cwd: repoDir, stdio: ["ignore", "pipe", "pipe"] });
  children.add(run);
  let output = "";
  run.stdout!.on("data", (c: Buffer) => (output += c));
  run.stderr!.on("data", (c: Buffer) => (output += c));
  const code = await new Promise<number | null>((done) => {
    run.once("error", (err) => {
      output += `failed to spawn: ${err.message}`;
      done(-1);
    });
    run.once("close", (c) => done(c));
  });
  children.delete(run);
  const ok = code === 0;
  // The usual cause on a fresh checkout; say so instead of leaving "Invalid path" to decode.
  const absent = [...rendered.yaml.matchAll(/filename:\s*"?([^"\s}]+\.wasm)/g)].map((m) => m[1]).filter((f) => !existsSync(f));
  if (!ok && absent.length) output = `missing ${absent.join(", ")}: run \`npm run build\` first\n${output}`;
  if (ok) rmSync(rendered.tmpDir, { recursive: true, force: true });
  return { ok, output };
}

// ---------------------------------------------------------------- node:test glue

export type EnvoyTestOptions = StartEnvoyOptions & { timeout?: number; skip?: boolean | string; only?: boolean };

/**
 * A test with its own Envoy. Options may be a function so values known only after `before()`
 * hooks (e.g. the mock upstream's port) can be read when the test runs.
 */
export function envoyTest(
  name: string,
  options: EnvoyTestOptions | (() => EnvoyTestOptions),
  fn: (envoy: EnvoyHandle, t: TestContext) => Promise<void> | void,
): Promise<void> {
  const declared = typeof options === "function" ? undefined : options;
  const testOptions = { timeout: declared?.timeout ?? 60_000, skip: declared?.skip, only: declared?.only };
  return test(name, testOptions, async (t) => {
    const envoy = await startEnvoy(typeof options === "function" ? options() : options);
    try {
      await fn(envoy, t);
    } catch (err) {
      process.stderr.write(`\n--- envoy log tail (${name}; full log ${envoy.logPath}) ---\n${tail(envoy.log())}\n--- end ---\n`);
      throw err;
    } finally {
      await envoy.stop();
    }
    // Passing runs leave nothing behind; failing ones keep their log and config for inspection.
    if (!process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
  });
}
