// The peer mode of the benchmark (`npm run bench -- --peers`). Its "Envoy's own filters" peer must
// do the work it stands for, or the comparison flatters llm-mesh: here it counts each answer's real
// token usage in envoyproxy/ratelimit after the answer (JSON and streamed), counts nothing before,
// and refuses once the minute's tokens are spent, overshooting by the last answer, as the report
// says. Then the mode itself end to end in its smoke form, without LiteLLM (an 800 MB install).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type Redis, startRedis } from "../tooling/ratelimit.ts";
import { AUTHORIZATION, CHAT_PATH, jsonAnswer, sseAnswer, workloads } from "../scripts/bench/bodies.ts";
import { type RunningEnvoy, startUpstream, stopEnvoy } from "../scripts/bench/envoys.ts";
import { DOMAIN, type EnvoyFiltersPeer, startEnvoyFilters } from "../scripts/bench/peers/envoy-filters.ts";

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));
const LIMIT = 1000;
const jsonTokens: number = JSON.parse(jsonAnswer()).usage.total_tokens;
const sseTokens: number = JSON.parse(sseAnswer().split("\n\n").filter((e) => e.includes('"usage":{')).pop()!.slice("data: ".length)).usage.total_tokens;

describe("the peer built from Envoy's own filters", () => {
  let upstream: RunningEnvoy;
  let redis: Redis;
  let peer: EnvoyFiltersPeer;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(repoDir, ".tmp", "bench-peers-test-"));
    upstream = await startUpstream(dir);
    redis = await startRedis();
    peer = await startEnvoyFilters(redis, upstream.ports.LISTEN_PORT, LIMIT);
  });
  after(async () => {
    if (peer) await stopEnvoy(peer.envoy);
    await peer?.service.stop();
    await redis?.stop();
    if (upstream) await stopEnvoy(upstream);
    rmSync(dir, { recursive: true, force: true });
  });

  const counted = async () => {
    let total = 0;
    for (const key of await redis.keys(`${DOMAIN}_*`)) total += (await redis.counter(key)) ?? 0;
    return total;
  };
  /** The count after the stream-done call, which Envoy makes after the client has its answer. */
  const countedSoon = async (expected: number) => {
    for (let i = 0; i < 40 && (await counted()) !== expected; i++) await sleep(50);
    return counted();
  };
  const send = async (stream: boolean) => {
    const w = workloads().find((x) => x.id === (stream ? "1k-sse" : "1k"))!;
    const headers: Record<string, string> = { "content-type": "application/json", authorization: AUTHORIZATION };
    if (stream) headers["x-bench-answer"] = "sse";
    const res = await fetch(peer.envoy.url(CHAT_PATH), { method: "POST", headers, body: w.body });
    await res.text();
    return res;
  };

  test("counts real usage after each answer, nothing before, and refuses once the minute is spent", async () => {
    // One minute window for the whole test: the service's windows are aligned to the clock.
    if (new Date().getSeconds() > 45) await sleep((61 - new Date().getSeconds()) * 1000);
    const first = await send(false);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("x-ratelimit-remaining"), String(LIMIT), "the check before the request counted nothing");
    assert.equal(await countedSoon(jsonTokens), jsonTokens, "a JSON answer's usage.total_tokens is counted");

    assert.equal((await send(true)).status, 200);
    assert.equal(await countedSoon(jsonTokens + sseTokens), jsonTokens + sseTokens, "a stream's usage event is counted");

    // Some tokens are left, so the next request goes through, whatever it will cost: no reservation.
    assert.ok(jsonTokens + sseTokens < LIMIT);
    assert.equal((await send(false)).status, 200);
    const spent = await countedSoon(2 * jsonTokens + sseTokens);
    assert.equal(spent, 2 * jsonTokens + sseTokens);
    assert.ok(spent > LIMIT, "the minute's budget is overshot by the last answer");

    assert.equal((await send(false)).status, 429);
    await sleep(300);
    assert.equal(await counted(), spent, "a refused request costs nothing");
  });
});

test("npm run bench -- --peers --smoke --no-litellm measures bare Envoy and Envoy's own filters and writes the report", { timeout: 180_000 }, async () => {
  const out = mkdtempSync(join(repoDir, ".tmp", "bench-peers-smoke-"));
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/bench.ts", "--peers", "--smoke", "--no-litellm", "--out", out], { cwd: repoDir, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (c: Buffer) => (output += c));
  child.stderr.on("data", (c: Buffer) => (output += c));
  const code = await new Promise<number | null>((done) => child.once("close", done));
  assert.equal(code, 0, `bench --peers --smoke failed:\n${output}`);
  assert.ok(existsSync(join(out, "peers.md")), "the report is written");
  const report = JSON.parse(readFileSync(join(out, "peers.json"), "utf8"));
  const at1k = (id: string) => report.summary.find((s: { scenario: string; workload: string }) => s.scenario === id && s.workload === "1k");
  assert.ok(at1k("bare")?.rps > 0 && at1k("bare").cpuUsPerRequest > 0, "bare Envoy was measured");
  const filters = at1k("envoy-filters");
  assert.ok(filters?.vsBare.cpu > 0 && filters.sideCpuUsPerRequest > 0, "Envoy's own filters were measured, with the rate limit service's and Redis's CPU beside");
  const row = report.peers.find((p: { id: string }) => p.id === "envoy-filters");
  const tokens = Number(/(\d+) tokens counted in Redis/.exec(row.verified)?.[1]);
  assert.ok(tokens > 0, `the benchmark's requests were counted: ${row.verified}`);
  assert.equal(report.peers.find((p: { id: string }) => p.id === "litellm").problem, "left out (--no-litellm)");
  if (existsSync(join(repoDir, "build", "mesh.wasm"))) assert.ok(at1k("mesh")?.vsBare.cpu > 0, "llm-mesh was measured");
  const markdown = readFileSync(join(out, "peers.md"), "utf8");
  assert.match(markdown, /^Generated by `npm run bench -- --peers --smoke --no-litellm` on \d{4}-/m);
  assert.match(markdown, /\| `litellm` \| not measured: left out \(--no-litellm\) \|/);
  rmSync(out, { recursive: true, force: true });
});
