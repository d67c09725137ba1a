// `npm start`: the mock LLM upstreams and a real Envoy with every llm-mesh filter, on localhost,
// as envoy/demo.yaml wires them. Runs until Ctrl-C.
//
// `npm start -- --global`: the same with cluster-wide budgets: Redis and Envoy's rate limit service
// (tooling/ratelimit.ts; build it once with `npm run setup:ratelimit`), and a second Envoy, both
// with the demo's throttle rules counted by the service, so a tenant has one budget across the two.
import { copyFileSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type EnvoyHandle, renderScenario, startEnvoy } from "../tooling/envoy.ts";
import { repoDir } from "../tooling/envoy-bin.ts";
import { startMockLlm } from "../tooling/mock-llm.ts";
import { type RateLimitService, type Redis, startRateLimitService, startRedis } from "../tooling/ratelimit.ts";

const port = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const LISTEN_PORT = port("LLM_MESH_PORT", 10000);
const ADMIN_PORT = port("LLM_MESH_ADMIN_PORT", 9901);

const PRIMARY_PORT = port("LLM_MESH_PRIMARY_PORT", 18000);
const CANARY_PORT = port("LLM_MESH_CANARY_PORT", 18001);
const SHADOW_PORT = port("LLM_MESH_SHADOW_PORT", 18002);
const SHADOW_LISTEN_PORT = port("LLM_MESH_SHADOW_LISTEN_PORT", 10001);
const RLS_PORT = port("LLM_MESH_RLS_PORT", 18081);
const ports = { LISTEN_PORT, ADMIN_PORT, UPSTREAM_PORT: PRIMARY_PORT, CANARY_PORT, SHADOW_PORT, SHADOW_LISTEN_PORT, RLS_PORT };
// With --global, the second Envoy: its own listeners, the same upstreams and rate limit service.
const SECOND_PORT = port("LLM_MESH_SECOND_PORT", 10002);
const secondPorts = { ...ports, LISTEN_PORT: SECOND_PORT, ADMIN_PORT: port("LLM_MESH_SECOND_ADMIN_PORT", 9902), SHADOW_LISTEN_PORT: port("LLM_MESH_SECOND_SHADOW_LISTEN_PORT", 10003) };
const DOMAIN = "llm-mesh-demo";

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
const global = process.argv.includes("--global");

/** The demo's throttle rules as they are, each counted by the rate limit service instead of one Envoy's shared data. */
function globalThrottleConfig(): object {
  const config = JSON.parse(readFileSync(join(repoDir, "envoy", "plugin-config", "throttle.json"), "utf8"));
  return { ...config, rate_limit_service: { cluster: "ratelimit", domain: DOMAIN }, rules: config.rules.map((rule: object) => ({ ...rule, backend: "global" })) };
}

const primary = await startMockLlm({ port: PRIMARY_PORT, name: "primary" });
const canary = await startMockLlm({ port: CANARY_PORT, name: "canary" });
const shadow = await startMockLlm({ port: SHADOW_PORT, name: "shadow" });
let redis: Redis | undefined;
let service: RateLimitService | undefined;
const envoys: EnvoyHandle[] = [];
let stopping = false;
async function stop(code = 0): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const envoy of envoys) await envoy.stop();
  await service?.stop();
  await redis?.stop();
  await Promise.all([primary.close(), canary.close(), shadow.close()]);
  process.exit(code);
}
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());

const demoEnvoy = (vars: object) => startEnvoy({ scenario: "demo", vars: { ...vars, ...(global ? { THROTTLE_CONFIG: globalThrottleConfig() } : {}) }, concurrency: 2, componentLogLevel: "wasm:info" });
try {
  if (global) {
    redis = await startRedis();
    service = await startRateLimitService({ redis, domain: DOMAIN, grpcPort: RLS_PORT });
  }
  envoys.push(await demoEnvoy(ports));
  if (global) envoys.push(await demoEnvoy(secondPorts));
} catch (err) {
  console.error(`demo: ${(err as Error).message}`);
  await stop(1);
}
const [envoy] = envoys;

const base = `http://localhost:${LISTEN_PORT}`;
console.log(`
llm-mesh demo: Envoy on ${base} (admin http://localhost:${ADMIN_PORT}); mock models on :${primary.port} (primary),
:${canary.port} (canary) and :${shadow.port} (shadow, fed by Envoy's mirror through :${SHADOW_LISTEN_PORT})
Envoy log: ${envoy.logPath}
Access log with per-request records: ${envoy.tmpDir}/access.log`);
if (global) {
  console.log(`
Cluster-wide budgets: a second Envoy on http://localhost:${SECOND_PORT} (admin http://localhost:${secondPorts.ADMIN_PORT}), and both
count the throttle's rules (5 requests/s and 2000 tokens/min per x-tenant) in Envoy's rate limit service on :${RLS_PORT},
with its counters in Redis on :${redis!.port}. Second Envoy's log: ${envoys[1].logPath}`);
}
console.log(`
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
`);
if (global) {
  console.log(`  # a tenant over its budget (5 requests/s, 2000 tokens/min) gets 429 with Retry-After, from
  # either Envoy: the two spend one budget (a window is a whole second, so a loop that straddles
  # two gets up to 5 more):
  for port in ${LISTEN_PORT} ${SECOND_PORT} ${LISTEN_PORT} ${SECOND_PORT} ${LISTEN_PORT} ${SECOND_PORT} ${LISTEN_PORT} ${SECOND_PORT}; do curl -s -o /dev/null -w '%{http_code} ' http://localhost:$port/v1/chat/completions -H 'x-tenant: demo' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'; done; echo

  # the service's counters, one per tenant, limit and window:
  redis-cli -p ${redis!.port} --scan --pattern '${DOMAIN}_*'

  # each Envoy's calls to the service (ok, over_limit, failure), refusals it answered itself, credits:
  curl -s http://localhost:${ADMIN_PORT}/stats/prometheus | grep '^llm_throttle_global'
`);
} else {
  console.log(`  # a tenant over its budget (5 requests/s, 2000 tokens/min) gets 429 with Retry-After:
  for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' ${base}/v1/chat/completions -H 'x-tenant: demo' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'; done; echo
`);
}
console.log(`  # shadow vs primary, side by side, from the access log:
  npx tsx scripts/shadow-report.ts ${envoy.tmpDir}/access.log

  # Prometheus metrics:
  curl -s http://localhost:${ADMIN_PORT}/stats/prometheus | grep gen_ai

Ctrl-C stops everything.`);
