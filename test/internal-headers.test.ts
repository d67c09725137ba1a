// Every request header an llm-mesh filter sets (the admission facts, the router's target and model
// headers, the throttle's redirect header) is removed from what the client sent before anything
// uses it: through the whole chain, whatever the request, the upstream never sees a client's value.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { type EnvoyHandle, startEnvoy } from "../tooling/envoy.ts";
import { type MockLlm, type RecordedRequest, startMockLlm } from "../tooling/mock-llm.ts";
import { ADMISSION_CONFIG, METRICS_CONFIG } from "../tooling/fuzz/mesh.ts";
import { Connection } from "./fuzz/raw-client.ts";
import { simpleChat } from "./fuzz/requests.ts";
import { waitForStatAtLeast } from "../tooling/stats.ts";

const FORGED = "forged-by-client";
/** Each header a filter sets, with the filter that sets it. */
const INTERNAL: Record<string, string> = {
  "x-llm-model": "llm-admission",
  "x-llm-api": "llm-admission",
  "x-llm-prompt-tokens": "llm-admission",
  "x-llm-max-tokens": "llm-admission",
  "x-llm-stream": "llm-admission",
  "x-llm-route": "llm-router (route_header)",
  "x-llm-target-model": "llm-router (model_header)",
  "x-llm-fallback": "llm-throttle (redirect.header)",
};

const THROTTLE = {
  rules: [
    {
      name: "over",
      match: { headers: [{ name: "x-tenant", exact: "over" }] },
      key: ["global"],
      limits: { requests_per_second: 1 },
      action: "redirect",
      redirect: { header: "x-llm-fallback", value: "1" },
    },
  ],
};
const ROUTER = { targets: { primary: {} }, model_header: "x-llm-target-model", rules: [{ name: "all", match: { models: ["*"] }, target: "primary" }] };

/** A request with every internal header forged, some of them twice. */
function forgedRequest(method: string, path: string, body: string, extra: Record<string, string> = {}): Buffer {
  const headers = [
    "host: llm.local",
    "content-type: application/json",
    ...Object.keys(INTERNAL).map((name) => `${name}: ${FORGED}`),
    `X-LLM-Model: ${FORGED}-2`,
    `x-llm-route: canary`,
    ...Object.entries(extra).map(([k, v]) => `${k}: ${v}`),
    `content-length: ${Buffer.byteLength(body)}`,
  ];
  return Buffer.from(`${method} ${path} HTTP/1.1\r\n${headers.join("\r\n")}\r\n\r\n${body}`);
}

/** The client's values that reached the upstream, as "header: value". */
function leaked(record: RecordedRequest): string[] {
  return Object.keys(INTERNAL).flatMap((name) => {
    const value = record.headers[name];
    const text = Array.isArray(value) ? value.join(", ") : (value ?? "");
    return text.includes(FORGED) || (name === "x-llm-route" && text.includes("canary")) ? [`${name}: ${text} (set by ${INTERNAL[name]})`] : [];
  });
}

describe("internal headers are never taken from the client", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());

  for (const invalidBody of ["reject", "allow"] as const) {
    describe(`with invalid_body ${invalidBody}`, () => {
      let envoy: EnvoyHandle;
      let connection: Connection;
      before(async () => {
        envoy = await startEnvoy({
          scenario: "fuzz",
          vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: { ...ADMISSION_CONFIG, invalid_body: invalidBody }, THROTTLE_CONFIG: THROTTLE, METRICS_CONFIG, ROUTER_CONFIG: ROUTER },
        });
        connection = new Connection(envoy.ports.LISTEN_PORT);
      });
      after(async () => {
        connection?.destroy();
        await envoy?.stop();
        if (envoy && !process.env.KEEP_TMP) rmSync(envoy.tmpDir, { recursive: true, force: true });
      });

      const cases: Array<[string, string, string, string, Record<string, string>?]> = [
        ["an admitted chat request", "POST", "/v1/chat/completions", simpleChat("gpt-4o", { max_tokens: 7 })],
        ["a streamed Anthropic request", "POST", "/v1/messages", simpleChat("claude-3-5-haiku-20241022", { max_tokens: 5, stream: true })],
        ["an embeddings request", "POST", "/v1/embeddings", '{"model":"text-embedding-3-small","input":"hi"}'],
        ["a request the throttle sends to the fallback", "POST", "/v1/chat/completions", simpleChat("gpt-4o-mini"), { "x-tenant": "over" }],
        ["a request on a path no filter reads", "POST", "/v1/files", '{"purpose":"batch"}'],
        ["a GET", "GET", "/v1/models", ""],
      ];
      if (invalidBody === "allow") cases.push(["a body admission passes through unread", "POST", "/v1/chat/completions", '{"model":"gpt-4o","model":"x"}']);

      for (const [name, method, path, body, extra] of cases) {
        test(name, async () => {
          // Twice for the throttle's case: its limit of one per second sends the second away.
          const rounds = extra?.["x-tenant"] === "over" ? 3 : 1;
          for (let i = 0; i < rounds; i++) {
            mock.reset();
            const outcome = await connection.request([forgedRequest(method, path, body, extra)]);
            assert.ok("response" in outcome, `${name}: answered`);
            assert.equal(mock.requests.length, 1, `${name}: reached the upstream (status ${outcome.response.status})`);
            const record = mock.requests[0];
            assert.deepEqual(leaked(record), [], `${name}: client values reached the upstream`);
            if (path === "/v1/chat/completions" && invalidBody === "reject") {
              // The filters' own values replaced the forged ones.
              assert.equal(record.headers["x-llm-model"], JSON.parse(body).model);
              assert.equal(record.headers["x-llm-api"], "openai.chat");
              assert.match(String(record.headers["x-llm-prompt-tokens"]), /^\d+$/);
              if (extra?.["x-tenant"] !== "over" || record.headers["x-llm-fallback"] === undefined) assert.equal(record.headers["x-llm-route"], "primary");
            }
          }
          if (extra?.["x-tenant"] === "over") {
            // The redirect happened, with the throttle's own value (counted within a flush period).
            await waitForStatAtLeast(envoy, "wasmcustom.llm_throttle.over.redirected", 1);
          }
        });
      }
    });
  }
});
