// LiteLLM's proxy as a peer in `npm run bench -- --peers`: installed by scripts/setup-litellm.sh,
// configured with one model that points at the benchmark's upstream as an OpenAI-compatible API,
// and run as one uvicorn worker (one process), as the Envoys run one worker.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { repoDir } from "../../../tooling/envoy-bin.ts";
import { freePort } from "../../../tooling/local-registry.ts";
import { answers, Process } from "../../../tooling/process.ts";
import { MODEL } from "../bodies.ts";

const here = fileURLToPath(new URL(".", import.meta.url));

/** Installs LiteLLM when needed; its `litellm` command, or why it cannot be had. */
export function setupLiteLlm(): { bin: string } | { problem: string } {
  const run = spawnSync("bash", [join(repoDir, "scripts", "setup-litellm.sh")], { cwd: repoDir, encoding: "utf8", timeout: 600_000 });
  if (run.status === 0) return { bin: run.stdout.trim().split("\n").pop()! };
  const said = `${run.stderr ?? ""}${run.stdout ?? ""}`.trim().split("\n").filter(Boolean);
  return { problem: `scripts/setup-litellm.sh failed (${run.error?.message ?? `exit ${run.status}`}): ${said.slice(-3).join(" / ")}` };
}

export interface LiteLlmOptions {
  bin: string;
  upstreamPort: number;
  /** Tokens per minute for each API key on the benchmark's model; none: no limit. */
  tpmLimit?: number;
  /** Redis for the limit's counters, shared by all instances; none: counters in the process. */
  redis?: { port: number };
  workDir: string;
}

export interface LiteLlm {
  pid: number;
  url(path: string): string;
  log(): string;
  stop(): Promise<void>;
}

export async function startLiteLlm(options: LiteLlmOptions): Promise<LiteLlm> {
  // It runs in its directory, where a relative path would point elsewhere.
  const workDir = resolve(options.workDir);
  mkdirSync(workDir, { recursive: true });
  // LiteLLM imports the custom auth module from the config file's directory.
  copyFileSync(join(here, "litellm_auth.py"), join(workDir, "litellm_auth.py"));
  const config = {
    model_list: [{ model_name: MODEL, litellm_params: { model: `openai/${MODEL}`, api_base: `http://127.0.0.1:${options.upstreamPort}/v1`, api_key: "unused" } }],
    general_settings: {
      // It refuses to start without a strong master key, even when a custom auth decides.
      master_key: `sk-${randomBytes(32).toString("hex")}`,
      custom_auth: "litellm_auth.user_api_key_auth",
      // x-bench-answer picks the upstream's streamed answer; LiteLLM forwards x-* headers only when told.
      forward_client_headers_to_llm_api: true,
      ...(options.redis ? { coordination_redis: { host: "127.0.0.1", port: options.redis.port } } : {}),
    },
  };
  const configFile = join(workDir, "config.yaml");
  writeFileSync(configFile, stringify(config));
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: workDir,
    // Without these it fetches its model price list from the internet at import time.
    LITELLM_LOCAL_MODEL_COST_MAP: "True",
    LITELLM_OFFLINE_MODE: "true",
    // Its per-request access log line would be work the Envoys are not asked to do.
    LITELLM_LOG: "ERROR",
    ...(options.tpmLimit !== undefined ? { BENCH_MODEL_TPM_LIMIT: JSON.stringify({ [MODEL]: options.tpmLimit }) } : {}),
  };
  const args = ["--config", configFile, "--host", "127.0.0.1", "--port", String(port), "--num_workers", "1"];
  const child = spawn("setpriv", ["--pdeathsig", "KILL", options.bin, ...args], { cwd: workDir, env, stdio: ["ignore", "pipe", "pipe"] });
  const p = new Process("litellm", child, join(workDir, "litellm.log"));
  const url = (path: string) => `http://127.0.0.1:${port}${path}`;
  try {
    await p.waitUntil("/health/liveliness", () => answers(url("/health/liveliness")), 120_000);
  } catch (err) {
    await p.stop();
    throw err;
  }
  return { pid: child.pid!, url, log: () => p.output, stop: () => p.stop() };
}
