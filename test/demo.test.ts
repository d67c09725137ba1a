// `npm start` must serve the curl line it prints. This runs the demo script on spare ports, takes
// the first curl command from its output, and sends the same request.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test("the demo prints a curl line that works, a refused unknown model, and the models it serves", { timeout: 60000 }, async () => {
  const env = { ...process.env };
  for (const name of ["LLM_MESH_PORT", "LLM_MESH_ADMIN_PORT", "LLM_MESH_PRIMARY_PORT", "LLM_MESH_CANARY_PORT", "LLM_MESH_SHADOW_PORT", "LLM_MESH_SHADOW_LISTEN_PORT"]) env[name] = String(await freePort());
  const demo = spawn(process.execPath, ["--import", "tsx", "scripts/demo.ts"], { cwd: repoDir, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  demo.stdout.on("data", (chunk) => (output += chunk));
  demo.stderr.on("data", (chunk) => (output += chunk));
  try {
    const deadline = Date.now() + 45000;
    while (!output.includes("Ctrl-C") && Date.now() < deadline && demo.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    assert.ok(output.includes("Ctrl-C"), output);
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
    // The shadow report the demo points to pairs the requests above with their mirrored copies
    // (envoy/demo.yaml groups the records under `llm` in the access log).
    const reportLine = output.match(/npx tsx (scripts\/shadow-report\.ts) (\S+)/);
    assert.ok(reportLine, output);
    let report = "";
    for (const deadline = Date.now() + 10000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
      report = spawnSync(process.execPath, ["--import", "tsx", reportLine[1], "--json", reportLine[2]], { cwd: repoDir, encoding: "utf8" }).stdout;
      if (report && JSON.parse(report).pairs > 0) break;
    }
    assert.ok(JSON.parse(report).pairs > 0, `the demo's shadow report paired nothing: ${report}`);
  } finally {
    demo.kill("SIGTERM");
    await new Promise((resolve) => (demo.exitCode !== null ? resolve(null) : demo.once("exit", resolve)));
  }
});
