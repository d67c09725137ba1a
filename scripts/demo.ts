// `npm start`: the mock LLM upstreams and a real Envoy with every llm-mesh filter, on localhost,
// as envoy/demo.yaml wires them. Runs until Ctrl-C.
import { copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { renderScenario, startEnvoy } from "../test/harness/envoy.ts";
import { repoDir } from "../test/harness/envoy-bin.ts";
import { startMockLlm } from "../test/harness/mock-llm.ts";

const LISTEN_PORT = Number(process.env.LLM_MESH_PORT ?? 10000);
const ADMIN_PORT = Number(process.env.LLM_MESH_ADMIN_PORT ?? 9901);

const PRIMARY_PORT = Number(process.env.LLM_MESH_PRIMARY_PORT ?? 18000);
const CANARY_PORT = Number(process.env.LLM_MESH_CANARY_PORT ?? 18001);

// `--render` writes the same config with the same ports to build/envoy-demo.yaml and stops: it is
// what envoy/docker-compose.yml runs, so the Docker and the no-Docker demo cannot drift apart.
if (process.argv.includes("--render")) {
  const rendered = await renderScenario("demo", { LISTEN_PORT, ADMIN_PORT, UPSTREAM_PORT: PRIMARY_PORT, CANARY_PORT });
  const out = join(repoDir, "build", "envoy-demo.yaml");
  copyFileSync(rendered.path, out);
  rmSync(rendered.tmpDir, { recursive: true, force: true });
  console.log(`wrote ${out}`);
  process.exit(0);
}

const primary = await startMockLlm({ port: PRIMARY_PORT, name: "primary" });
const canary = await startMockLlm({ port: CANARY_PORT, name: "canary" });
const envoy = await startEnvoy({
  scenario: "demo",
  vars: { LISTEN_PORT, ADMIN_PORT, UPSTREAM_PORT: primary.port, CANARY_PORT: canary.port },
  concurrency: 2,
  componentLogLevel: "wasm:info",
});

const base = `http://localhost:${LISTEN_PORT}`;
console.log(`
llm-mesh demo: Envoy on ${base} (admin http://localhost:${ADMIN_PORT}), mock models on :${primary.port} (primary) and :${canary.port} (canary)
Envoy log: ${envoy.logPath}

Try:
  curl -s ${base}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, mesh"}],"max_tokens":16}'

  # an unknown model, refused before it reaches a GPU:
  curl -s ${base}/v1/chat/completions -d '{"model":"gpt-9","messages":[]}'

  # Prometheus metrics:
  curl -s http://localhost:${ADMIN_PORT}/stats/prometheus | grep gen_ai

Ctrl-C stops everything.`);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await envoy.stop();
  await Promise.all([primary.close(), canary.close()]);
  process.exit(0);
}
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
