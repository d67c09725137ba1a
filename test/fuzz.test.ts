// Fuzz run through the real Envoy (2 workers) with every llm-mesh filter chained in front of the
// mock model: FUZZ_REQUESTS (100,000 by default) generated requests, malformed in body, framing and
// headers (test/fuzz/requests.ts). It passes when no filter traps, every request gets an answer
// with a documented status, nothing the policy stops reaches the upstream, and the in-flight
// gauges are back at zero afterwards. FUZZ_SEED replays a run; a failure names the request index.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { type EnvoyHandle, startEnvoy, tail } from "../tooling/envoy.ts";
import { type MockLlm, type RecordedRequest, startMockLlm } from "../tooling/mock-llm.ts";
import { MESH_VARS, SERVED, settledInFlight, upstreamViolations, VM_FAILURE } from "../tooling/fuzz/mesh.ts";
import { Connection, oneShot, type Outcome, type RawResponse } from "./fuzz/raw-client.ts";
import { loadRequestReader, type RequestReader } from "../tooling/fuzz/reader.ts";
import { type FuzzRequest, fuzzRequest, simpleChat } from "./fuzz/requests.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 7_340_011);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 100_000);
const CONNECTIONS = 24;

/**
 * The answers a request may get. From the upstream: its own answers (404 for paths it does not
 * serve, 405 for methods, 400 for requests it finds incomplete). From the proxy: llm-admission's
 * 400 and 413, llm-throttle's 429, and Envoy's own 400, 413 and 431 for broken HTTP.
 */
const DOCUMENTED: Record<"upstream" | "proxy", number[]> = {
  upstream: [200, 400, 404, 405],
  proxy: [400, 413, 429, 431],
};

/** Response details (Envoy's %RESPONSE_CODE_DETAILS%) a request may end with. */
const DOCUMENTED_DETAILS = /^(via_upstream|llm-admission_\w+|llm-throttle_\w+|http1\.\S+|request_headers_too_large|request_payload_too_large|downstream_remote_disconnect|-)$/;

function source(response: RawResponse): "upstream" | "proxy" {
  return response.headers["x-mock-served-by"] ? "upstream" : "proxy";
}

interface Tally {
  statuses: Map<string, number>;
  kinds: Map<string, number>;
  problems: string[];
  answered: number;
}

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function problem(tally: Tally, request: FuzzRequest, what: string): void {
  if (tally.problems.length < 25) tally.problems.push(`#${request.index} ${request.kind}: ${what}\n      ${request.preview}`);
  else if (tally.problems.length === 25) tally.problems.push("(more left out)");
}

/** Checks one answer and counts it. */
function judge(tally: Tally, request: FuzzRequest, responses: RawResponse[], ended: "answered" | "closed" | "timedOut"): void {
  count(tally.kinds, request.kind.split("/")[0]);
  if (ended === "timedOut") {
    count(tally.statuses, "no answer (timed out)");
    return problem(tally, request, "no answer within the timeout: a request left paused?");
  }
  if (!responses.length) {
    count(tally.statuses, `${request.transport}: connection closed without an answer`);
    // A body shorter than its content-length ends with the client's close: there is nothing to answer.
    if (request.transport !== "halfclose") problem(tally, request, "the connection closed without an answer");
    return;
  }
  tally.answered++;
  for (const response of responses) {
    const from = source(response);
    count(tally.statuses, `${response.status} from ${from}`);
    if (!DOCUMENTED[from].includes(response.status)) problem(tally, request, `status ${response.status} from ${from}: ${response.body.toString("utf8").slice(0, 200)}`);
  }
  const first = responses[0];
  // llm-admission cannot read a compressed body, so invalid_body (reject here) decides for it.
  const framing = request.kind.split("/")[0];
  if ((framing === "gzip" || framing === "encoding-lie") && SERVED[request.path] && first.status === 200) {
    problem(tally, request, "a content-encoded body was served");
  }
}

async function send(connection: Connection, port: number, request: FuzzRequest): Promise<{ responses: RawResponse[]; ended: "answered" | "closed" | "timedOut" }> {
  if (request.transport === "keepalive") {
    const outcome: Outcome = await connection.request(request.writes, { pauseBetweenWrites: request.paced, timeoutMs: 20_000 });
    if ("response" in outcome) return { responses: [outcome.response], ended: "answered" };
    return { responses: [], ended: "closed" in outcome ? "closed" : "timedOut" };
  }
  const { responses, timedOut } = await oneShot(port, Buffer.concat(request.writes), { halfClose: request.transport === "halfclose", timeoutMs: 20_000 });
  return { responses, ended: responses.length ? "answered" : timedOut ? "timedOut" : "closed" };
}

/** A request as the mock records it, for checking the checker. */
function record(body: string, headers: Record<string, string>): RecordedRequest {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  const facts = { "x-llm-api": "openai.chat", "x-llm-model": "gpt-4o", "x-llm-max-tokens": "5", "x-llm-stream": "false", "x-llm-route": "primary" };
  return { method: "POST", path: "/v1/chat/completions", headers: { ...facts, ...headers }, authority: "x", body, json, at: 0 };
}

test("the upstream check finds what the policy must stop", async () => {
  const reader = await loadRequestReader();
  const good = '{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":5}';
  const estimate = String(reader.read(Buffer.from(good), "openai.chat").promptTokens);
  const recorded = (body: string, headers: Record<string, string> = {}) => record(body, { "x-llm-prompt-tokens": estimate, ...headers });
  assert.deepEqual(upstreamViolations(recorded(good), reader), []);
  const bad: Array<[string, RecordedRequest]> = [
    ["content-encoding", recorded(good, { "content-encoding": "gzip" })],
    ["not allowed", recorded(good.replace("gpt-4o", "gpt-5"), { "x-llm-model": "gpt-5" })],
    ["refuses", recorded(good.replace('"max_tokens":5', '"max_tokens":5,"model":"gpt-4o"'))],
    ["over the limit", recorded(good.replace('"max_tokens":5', '"max_tokens":5000'), { "x-llm-max-tokens": "5000" })],
    ["x-llm-model", recorded(good, { "x-llm-model": "forged" })],
    ["x-llm-route", recorded(good, { "x-llm-route": "canary" })],
    ["over the limit 8000", recorded(good, { "x-llm-prompt-tokens": "9000" })],
    ["not a JSON object", recorded("{")],
  ];
  for (const [expected, record] of bad) {
    const found = upstreamViolations(record, reader).join("; ");
    assert.ok(found.includes(expected), `expected a violation mentioning "${expected}", got "${found}"`);
  }
});

describe("fuzz: every llm-mesh filter in the real Envoy", () => {
  let mock: MockLlm;
  let envoy: EnvoyHandle;
  let reader: RequestReader;

  before(async () => {
    reader = await loadRequestReader();
    mock = await startMockLlm({ name: "primary" });
    envoy = await startEnvoy({ scenario: "fuzz", vars: { UPSTREAM_PORT: mock.port, ...MESH_VARS }, concurrency: 2, componentLogLevel: "wasm:info" });
  });
  after(async () => {
    await envoy?.stop();
    await mock?.close();
    if (envoy && !process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
  });

  test("a percent-encoded endpoint is read like the plain one (servers decode the path before routing)", async () => {
    const connection = new Connection(envoy.ports.LISTEN_PORT);
    try {
      for (const path of ["/v1/chat/%63ompletions", "/v1/chat%2Fcompletions", "/v1/%6Dessages"]) {
        mock.reset();
        const body = simpleChat("gpt-5");
        const outcome = await connection.request([Buffer.from(`POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`)]);
        assert.ok("response" in outcome);
        assert.equal(outcome.response.status, 400, path);
        assert.match(outcome.response.body.toString(), /gpt-5/);
        assert.equal(mock.requests.length, 0, `${path} reached the upstream`);
      }
    } finally {
      connection.destroy();
    }
  });

  test(`${REQUESTS} generated requests: no trap, documented answers, nothing forbidden upstream`, { timeout: 15 * 60_000 }, async () => {
    const port = envoy.ports.LISTEN_PORT;
    const tally: Tally = { statuses: new Map(), kinds: new Map(), problems: [], answered: 0 };
    const upstreamProblems: string[] = [];
    let upstreamChecked = 0;
    const checkUpstream = () => {
      for (const record of mock.requests.splice(0)) {
        upstreamChecked++;
        const found = upstreamViolations(record, reader);
        if (found.length && upstreamProblems.length < 20) {
          upstreamProblems.push(`${record.path} ${JSON.stringify(record.body.slice(0, 300))}\n      ${found.join("\n      ")}`);
        }
      }
    };

    const started = Date.now();
    let next = 0;
    let done = 0;
    const only = process.env.FUZZ_ONLY;
    const indexes = only ? only.split(",").map(Number) : undefined;
    const total = indexes ? indexes.length : REQUESTS;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        const connection = new Connection(port);
        while (next < total) {
          const index = indexes ? indexes[next++] : next++;
          const request = fuzzRequest(SEED, index);
          const { responses, ended } = await send(connection, port, request);
          judge(tally, request, responses, ended);
          if (++done % 5000 === 0) {
            checkUpstream();
            if (process.env.FUZZ_PROGRESS) console.log(`  ${done} requests, ${Math.round((done * 1000) / (Date.now() - started))}/s`);
          }
        }
        connection.destroy();
      }),
    );
    const seconds = (Date.now() - started) / 1000;
    checkUpstream();

    const details = new Map<string, number>();
    for (const line of readFileSync(`${envoy.tmpDir}/access.log`, "utf8").split("\n")) {
      if (line) count(details, line);
    }
    const log = envoy.log();
    const failures = log.split("\n").filter((line) => VM_FAILURE.test(line));

    const sorted = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]).map(([k, v]) => `    ${String(v).padStart(7)}  ${k}`).join("\n");
    console.log(
      `fuzz: ${done} requests in ${seconds.toFixed(1)} s (${Math.round(done / seconds)}/s) on ${CONNECTIONS} connections, seed ${SEED}; ` +
        `${upstreamChecked} reached the upstream\n  answers:\n${sorted(tally.statuses)}\n  by framing:\n${sorted(tally.kinds)}\n  Envoy's response details:\n${sorted(details)}`,
    );

    assert.deepEqual(failures.slice(0, 10), [], `filters trapped or a VM failed:\n${tail(failures.join("\n"), 20)}`);
    assert.deepEqual(tally.problems, [], `undocumented answers:\n  ${tally.problems.join("\n  ")}`);
    assert.deepEqual(upstreamProblems, [], `the upstream received requests the policy stops:\n  ${upstreamProblems.join("\n  ")}`);
    const odd = [...details.keys()].filter((line) => !DOCUMENTED_DETAILS.test(line.split(" ")[1] ?? ""));
    assert.deepEqual(odd, [], "every request ended with a documented response detail");
    // Settled: nothing in flight in Envoy or in any filter's gauges.
    await settledInFlight(envoy);
    if (!indexes) {
      assert.equal(done, REQUESTS);
      assert.ok(upstreamChecked > REQUESTS / 10, `a real share reached the upstream (${upstreamChecked})`);
      assert.ok([...tally.statuses.keys()].some((k) => k.startsWith("429")), "the throttle refused some requests");
    }
  });
});
