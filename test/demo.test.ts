// `npm start` must serve the curl line it prints. This runs the demo script on spare ports, takes
// the first curl command from its output, and sends the same request. `npm start -- --global` must
// give a tenant one budget across its two Envoys.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { freePort } from "../tooling/local-registry.ts";

const PORT_VARS = ["LLM_MESH_PORT", "LLM_MESH_ADMIN_PORT", "LLM_MESH_PRIMARY_PORT", "LLM_MESH_CANARY_PORT", "LLM_MESH_SHADOW_PORT", "LLM_MESH_SHADOW_LISTEN_PORT", "LLM_MESH_RLS_PORT"];
const SECOND_PORT_VARS = ["LLM_MESH_SECOND_PORT", "LLM_MESH_SECOND_ADMIN_PORT", "LLM_MESH_SECOND_SHADOW_LISTEN_PORT"];

/** Runs the demo on spare ports until it has printed its help, hands its output and ports to `check`, then stops it. */
async function withDemo(args: string[], check: (output: string, ports: Record<string, number>) => Promise<void>): Promise<void> {
  const env = { ...process.env };
  const ports: Record<string, number> = {};
  for (const name of [...PORT_VARS, ...SECOND_PORT_VARS]) env[name] = String((ports[name] = await freePort()));
  const demo = spawn(process.execPath, ["--import", "tsx", "scripts/demo.ts", ...args], { cwd: repoDir, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  demo.stdout.on("data", (chunk) => (output += chunk));
  demo.stderr.on("data", (chunk) => (output += chunk));
  try {
    const deadline = Date.now() + 45000;
    while (!output.includes("Ctrl-C") && Date.now() < deadline && demo.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    assert.ok(output.includes("Ctrl-C"), output);
    await check(output, ports);
  } finally {
    demo.kill("SIGTERM");
    await new Promise((resolve) => (demo.exitCode !== null ? resolve(null) : demo.once("exit", resolve)));
  }
}

test("the demo prints a curl line that works, a refused unknown model, and the models it serves", { timeout: 60000 }, () => withDemo([], async (output) => {
  const curls = [...output.matchAll(/curl -s (\S+)((?: -H '[^']+')*) \\\s*\n\s*-d '([^']+)'|curl -s (\S+) -d '([^']+)'/g)];
  assert.ok(curls.length >= 2, output);
  const [first, second] = curls;
  const ok = await fetch(first[1], { method: "POST", headers: { "content-type": "application/json" }, body: first[3] });
  const answer = await ok.json();
  assert.equal(ok.status, 200, JSON.stringify(answer));
  assert.equal(answer.object, "chat.completion");
  assert.ok(answer.usage.completion_tokens > 0);
  const refused = await fetch(second[4], { method: "POST", body: second[5] });
  assert.equal(refused.status, 400);
  assert.equal((await refused.json()).error.code, "model_not_found");
  const list = output.match(/curl -s (\S+\/v1\/models)\n/);
  assert.ok(list, output);
  // The mock model server lists gpt-4o, gpt-4o-mini, text-embedding-3-small, claude-3-5-sonnet-latest.
  const models = await (await fetch(list[1])).json();
  assert.deepEqual(models.data.map((m: { id: string }) => m.id), ["gpt-4o-mini"]);
  const beta = output.match(/curl -si (\S+) -H '([^:']+): ([^']+)' \\\s*\n\s*-d '([^']+)'/);
  assert.ok(beta, output);
  const canary = await fetch(beta[1], { method: "POST", headers: { [beta[2]]: beta[3] }, body: beta[4] });
  assert.equal(canary.status, 200);
  assert.equal(canary.headers.get("x-mock-served-by"), "canary");
  // The shadow report the demo points to pairs primary requests with their mirrored copies
  // (envoy/demo.yaml mirrors the primary route only, and groups the records under `llm` in the
  // access log). The first curl line's model is in a 90/10 rollout, so one in ten goes to the
  // canary and has no copy: send it until the primary has served one.
  let servedBy = ok.headers.get("x-mock-served-by");
  for (let tries = 0; servedBy !== "primary" && tries < 30; tries++) {
    const again = await fetch(first[1], { method: "POST", headers: { "content-type": "application/json" }, body: first[3] });
    await again.arrayBuffer();
    servedBy = again.headers.get("x-mock-served-by");
  }
  assert.equal(servedBy, "primary", "the rollout sent 30 requests in a row to the canary");
  const reportLine = output.match(/npx tsx (scripts\/shadow-report\.ts) (\S+)/);
  assert.ok(reportLine, output);
  let report = "";
  for (const deadline = Date.now() + 10000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
    report = spawnSync(process.execPath, ["--import", "tsx", reportLine[1], "--json", reportLine[2]], { cwd: repoDir, encoding: "utf8" }).stdout;
    if (report && JSON.parse(report).pairs > 0) break;
  }
  assert.ok(JSON.parse(report).pairs > 0, `the demo's shadow report paired nothing: ${report}`);
}));

test("--global: the tenant loop the demo prints gets 5 answers in a second from its two Envoys together, then 429 from both", { timeout: 90000 }, () => withDemo(["--global"], async (output, ports) => {
  const loop = output.match(/for port in ([\d ]+); do curl -s -o \/dev\/null -w '%\{http_code\} ' http:\/\/localhost:\$port(\S+) -H '([^:']+): ([^']+)' \\\s*\n\s*-d '([^']+)'/);
  assert.ok(loop, output);
  const [, portList, path, header, tenant, body] = loop;
  const loopPorts = portList.trim().split(" ").map(Number);
  assert.deepEqual([...new Set(loopPorts)].sort(), [ports.LLM_MESH_PORT, ports.LLM_MESH_SECOND_PORT].sort(), "the loop alternates the two Envoys");
  const send = (port: number, who: string) => fetch(`http://localhost:${port}${path}`, { method: "POST", headers: { [header]: who }, body }).then(async (r) => (await r.arrayBuffer(), r.status));
  // Each Envoy's workers open their connection to the service before the loop is timed.
  for (const p of loopPorts) assert.equal(await send(p, `warm-up-${p}`), 200);
  // The service's windows are whole seconds of the clock: start the loop at the beginning of one.
  await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000)));
  const started = Date.now();
  const statuses: number[] = [];
  for (const p of loopPorts) statuses.push(await send(p, tenant));
  assert.ok(Date.now() - started < 1000, `the loop took ${Date.now() - started} ms, longer than the window`);
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
}));
