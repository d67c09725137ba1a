// Runs the real Prometheus server (Debian's `prometheus` package) on a loopback port, scraping
// Envoy's admin /stats/prometheus, so tests can ask PromQL what an operator would ask. Also wraps
// `promtool` for checking scrapes and queries.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { repoDir } from "./envoy-bin.ts";
import { freePort } from "./local-registry.ts";
import { answers, Process } from "./process.ts";

export const PROMETHEUS_BIN = process.env.PROMETHEUS_BIN ?? "/usr/bin/prometheus";
export const PROMTOOL_BIN = process.env.PROMTOOL_BIN ?? "/usr/bin/promtool";

export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface StartPrometheusOptions {
  /** host:port of each Envoy admin endpoint to scrape. */
  targets: string[];
  metricsPath?: string;
  /** Prometheus duration, e.g. "1s". */
  scrapeInterval?: string;
  readyTimeoutMs?: number;
}

export interface PrometheusHandle {
  url: string;
  dir: string;
  /** An instant query; throws with Prometheus's own message when the query does not parse. */
  query(expr: string): Promise<PromSample[]>;
  /** The query's single value (the sum of all series), 0 when it returns nothing. */
  value(expr: string): Promise<number>;
  /** Polls an instant query until `accept` holds; throws with the last answer when it never does. */
  waitFor(expr: string, accept: (samples: PromSample[]) => boolean, timeoutMs?: number): Promise<PromSample[]>;
  /** Resolves once a scrape that started after this call has been stored. */
  nextScrape(timeoutMs?: number): Promise<void>;
  log(): string;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

// Killed with the test process even on SIGKILL (as the Envoy harness does), so no server outlives it.
function launcher(bin: string, args: string[]): [string, string[]] {
  const setpriv = spawnSync("setpriv", ["--version"], { stdio: "ignore" }).status === 0;
  return setpriv ? ["setpriv", ["--pdeathsig", "KILL", bin, ...args]] : [bin, args];
}

function configYaml(options: StartPrometheusOptions): string {
  const interval = options.scrapeInterval ?? "1s";
  return [
    "global:",
    `  scrape_interval: ${interval}`,
    `  scrape_timeout: ${interval}`,
    "scrape_configs:",
    "  - job_name: envoy",
    `    metrics_path: ${options.metricsPath ?? "/stats/prometheus"}`,
    "    static_configs:",
    `      - targets: [${options.targets.map((t) => JSON.stringify(t)).join(", ")}]`,
    "",
  ].join("\n");
}

export async function startPrometheus(options: StartPrometheusOptions): Promise<PrometheusHandle> {
  const tmpRoot = join(repoDir, ".tmp");
  mkdirSync(tmpRoot, { recursive: true });
  const dir = mkdtempSync(join(tmpRoot, "prometheus-"));
  const configPath = join(dir, "prometheus.yml");
  writeFileSync(configPath, configYaml(options));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const args = [
    `--config.file=${configPath}`,
    `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--storage.tsdb.retention.time=1h",
    "--log.level=warn",
  ];
  const [cmd, argv] = launcher(PROMETHEUS_BIN, args);
  const prometheus = new Process("prometheus", spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] }), join(dir, "prometheus.log"));
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await prometheus.stop();
      if (!process.env.KEEP_TMP) rmSync(dir, { recursive: true, force: true });
    })());

  async function query(expr: string): Promise<PromSample[]> {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    const body = (await res.json()) as any;
    if (body.status !== "success") throw new Error(`PromQL ${expr}: ${body.errorType}: ${body.error}`);
    const result = body.data.result;
    if (body.data.resultType === "scalar") return [{ metric: {}, value: Number(result[1]) }];
    return result.map((r: any) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  const handle: PrometheusHandle = {
    url,
    dir,
    query,
    async value(expr) {
      return (await query(expr)).reduce((sum, s) => sum + s.value, 0);
    },
    async waitFor(expr, accept, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let last: PromSample[] = [];
      while (true) {
        last = await query(expr);
        if (accept(last)) return last;
        if (Date.now() > deadline) throw new Error(`PromQL ${expr} never gave an accepted answer in ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
        await sleep(250);
      }
    },
    async nextScrape(timeoutMs = 20_000) {
      const since = Date.now() / 1000;
      await handle.waitFor('max(timestamp(up{job="envoy"}))', (s) => s.length > 0 && s[0].value > since, timeoutMs);
    },
    log: () => prometheus.output,
    stop,
  };

  try {
    await prometheus.waitUntil("ready answer", () => answers(`${url}/-/ready`), options.readyTimeoutMs ?? 20_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return handle;
}

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function promtool(args: string[], input?: string): ToolResult {
  const run = spawnSync(PROMTOOL_BIN, args, { input, encoding: "utf8" });
  if (run.error) throw new Error(`cannot run ${PROMTOOL_BIN}: ${run.error.message}`);
  return { code: run.status ?? -1, stdout: run.stdout, stderr: run.stderr };
}

/** promtool's exit code for problems found by its linter (as opposed to 1: the text did not parse). */
export const PROMTOOL_LINT_PROBLEMS = 3;

export interface MetricsCheck {
  /** Whether the exposition parsed. */
  parsed: boolean;
  /** Lint findings, one "<metric> <problem>" per entry. */
  problems: string[];
  output: string;
}

/** `promtool check metrics` over an exposition text. */
export function checkMetrics(exposition: string): MetricsCheck {
  const result = promtool(["check", "metrics"], exposition);
  const output = result.stdout + result.stderr;
  const problems = output.split("\n").map((l) => l.trim()).filter(Boolean);
  return { parsed: result.code === 0 || result.code === PROMTOOL_LINT_PROBLEMS, problems: result.code === 0 ? [] : problems, output };
}
