// `npm start`: the mock LLM upstreams and a real Envoy with every llm-mesh filter, on localhost,
// as envoy/demo.yaml wires them. Runs until Ctrl-C.
import { copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { renderScenario, startEnvoy } from "../tooling/envoy.ts";
import { repoDir } from "../tooling/envoy-bin.ts";
import { startMockLlm } from "../tooling/mock-llm.ts";

const LISTEN_PORT = Number(process.env.LLM_MESH_PORT ?? 10000);
const ADMIN_PORT = Number(process.env.LLM_MESH_ADMIN_PORT ?? 9901);

const PRIMARY_PORT = Number(process.env.LLM_MESH_PRIMARY_PORT ?? 18000);
const CANARY_PORT = Number(process.env.LLM_MESH_CANARY_PORT ?? 18001);
const SHADOW_PORT = Number(process.env.LLM_MESH_SHADOW_PORT ?? 18002);
const SHADOW_LISTEN_PORT = Number(process.env.LLM_MESH_SHADOW_LISTEN_PORT ?? 10001);
const ports = { LISTEN_PORT, ADMIN_PORT, UPSTREAM_PORT: PRIMARY_PORT, CANARY_PORT, SHADOW_PORT, SHADOW_LISTEN_PORT };

// `--render` writes the same config with the same ports to build/envoy-demo.yaml and stops: it is
// what envoy/docker-compose.yml runs, so the Docker and the no-Docker demo cannot drift apart.
if (process.argv.includes("--render")) {
  const rendered = await renderScenario("demo", ports);
  const out = join(repoDir, "build", "envoy-demo.yaml");
  copyFileSync(rendered.path, out);
  rmSync(rendered.tmpDir, { recursive: true, force: true });
  console.log(`wrote ${out}`);
  process.exit(0);
}

const primary = await startMockLlm({ port: PRIMARY_PORT, name: "primary" });
const canary = await startMockLlm({ port: CANARY_PORT, name: "canary" });
const shadow = await startMockLlm({ port: SHADOW_PORT, name: "shadow" });
const envoy = await startEnvoy({
  scenario: "demo",
  vars: ports,
  concurrency: 2,
  componentLogLevel: "wasm:info",
});

const base = `http://localhost:${LISTEN_PORT}`;
console.log(`
llm-mesh demo: Envoy on ${base} (admin http://localhost:${ADMIN_PORT}); mock models on :${primary.port} (primary),
:${canary.port} (canary) and :${shadow.port} (shadow, fed by Envoy's mirror through :${SHADOW_LISTEN_PORT})
Envoy log: ${envoy.logPath}
Access log with per-request records: ${envoy.tmpDir}/access.log

Try:
  curl -s ${base}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, mesh"}],"max_tokens":16}'

  # an unknown model, refused before it reaches a GPU:
  curl -s ${base}/v1/chat/completions -d '{"model":"gpt-9","messages":[]}'

  # the models a client may name: the model server's list, less what admission refuses:
  curl -s ${base}/v1/models

  # beta users go to the canary (answered by the "canary" mock, model rewritten):
  curl -si ${base}/v1/chat/completions -H 'x-user-group: beta' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}' | grep -i x-mock-served-by

  # a tenant over its budget (5 requests/s, 2000 tokens/min) gets 429 with Retry-After:
  for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' ${base}/v1/chat/completions -H 'x-tenant: demo' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'; done; echo

  # shadow vs primary, side by side, from the access log:
  npx tsx scripts/shadow-report.ts ${envoy.tmpDir}/access.log

  # Prometheus metrics:
  curl -s http://localhost:${ADMIN_PORT}/stats/prometheus | grep gen_ai

Ctrl-C stops everything.`);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await envoy.stop();
  await Promise.all([primary.close(), canary.close(), shadow.close()]);
  process.exit(0);
}
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
