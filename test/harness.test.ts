// Checks the test harness itself against the real Envoy: every scenario config validates, and the
// mock LLM's answers survive the proxy with token counts equal to gpt-tokenizer's.
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { envoyTest, renderScenario, validateScenario } from "../tooling/envoy.ts";
import { postJson, rawHttp, readSse } from "../tooling/http.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";

const scenarios = readdirSync(join(repoDir, "envoy"))
  .filter((f) => f.endsWith(".yaml"))
  .map((f) => f.slice(0, -".yaml".length));

describe("envoy configs", () => {
  for (const scenario of scenarios) {
    test(`envoy/${scenario}.yaml passes envoy --mode validate`, async () => {
      const { ok, output } = await validateScenario(scenario);
      assert.ok(ok, output);
    });
  }
});

describe("renderScenario", () => {
  test("allocates distinct ports and quotes plugin config as a JSON string", async () => {
    const r = await renderScenario("passthrough", { UPSTREAM_PORT: 1234 });
    assert.equal(r.ports.UPSTREAM_PORT, 1234);
    assert.notEqual(r.ports.ADMIN_PORT, r.ports.LISTEN_PORT);
    assert.match(r.yaml, new RegExp(`port_value: ${r.ports.LISTEN_PORT} `));
    assert.ok(!r.yaml.includes("{{"));
    assert.equal(readFileSync(r.path, "utf8"), r.yaml);
    rmSync(r.tmpDir, { recursive: true });
  });
});

describe("mock LLM through a passthrough Envoy", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());
  const passthrough = () => ({ scenario: "passthrough", vars: { UPSTREAM_PORT: mock.port } });

  const messages = [
    { role: "system", content: "You are terse." },
    { role: "user", content: [{ type: "text", text: "Route this prompt" }, { type: "text", text: " through the mesh, please." }] },
  ];
  const promptTokens = countTokens("You are terse.") + countTokens("Route this prompt") + countTokens(" through the mesh, please.");

  envoyTest("OpenAI chat JSON, streams and embeddings carry exact usage", passthrough, async (envoy) => {
    mock.reset();
    const chat = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o-mini", messages, max_tokens: 5 });
    assert.equal(chat.status, 200, chat.text);
    assert.equal(chat.headers["x-mock-served-by"], "primary");
    assert.equal(chat.json.model, "gpt-4o-mini");
    assert.deepEqual(chat.json.usage, { prompt_tokens: promptTokens, completion_tokens: 5, total_tokens: promptTokens + 5 });
    assert.equal(countTokens(chat.json.choices[0].message.content), 5);
    assert.equal(chat.json.choices[0].finish_reason, "length");
    assert.equal(mock.requests.length, 1);
    assert.equal(mock.requests[0].path, "/v1/chat/completions");
    assert.deepEqual(mock.requests[0].json, { model: "gpt-4o-mini", messages, max_tokens: 5 });

    const plain = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages, stream: true }, { "x-mock-completion-tokens": "7" });
    assert.equal(plain.status, 200);
    assert.match(plain.headers["content-type"], /text\/event-stream/);
    const plainEvents = readSse(plain.text);
    assert.equal(plainEvents.at(-1)!.data, "[DONE]");
    const chunks = plainEvents.slice(0, -1).map((e) => JSON.parse(e.data));
    assert.ok(chunks.every((c) => c.object === "chat.completion.chunk" && c.usage === undefined));
    const streamed = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.equal(countTokens(streamed), 7);

    const withUsage = await postJson(
      envoy.url("/v1/chat/completions"),
      { model: "gpt-4o", messages, stream: true, stream_options: { include_usage: true } },
      { "x-mock-completion-tokens": "3", "x-mock-model": "gpt-4o-canary" },
    );
    const usageEvents = readSse(withUsage.text);
    const last = JSON.parse(usageEvents.at(-2)!.data);
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, { prompt_tokens: promptTokens, completion_tokens: 3, total_tokens: promptTokens + 3 });
    assert.equal(last.model, "gpt-4o-canary");

    const input = ["first text to embed", "second one"];
    const emb = await postJson(envoy.url("/v1/embeddings"), { model: "text-embedding-3-small", input });
    assert.equal(emb.status, 200, emb.text);
    assert.equal(emb.json.data.length, 2);
    const inputTokens = countTokens(input[0]) + countTokens(input[1]);
    assert.deepEqual(emb.json.usage, { prompt_tokens: inputTokens, total_tokens: inputTokens });

    const completion = await postJson(envoy.url("/v1/completions"), { model: "gpt-3.5-turbo-instruct", prompt: "Say hi", max_tokens: 4 });
    assert.equal(completion.json.usage.prompt_tokens, countTokens("Say hi"));
    assert.equal(countTokens(completion.json.choices[0].text), 4);
  });

  envoyTest("Anthropic messages stream with usage in message_start and message_delta", passthrough, async (envoy) => {
    const body = {
      model: "claude-3-5-sonnet-latest",
      max_tokens: 6,
      system: "Answer briefly.",
      messages: [{ role: "user", content: "What is a service mesh?" }],
      stream: true,
    };
    const res = await postJson(envoy.url("/v1/messages"), body, { "x-mock-chunk-delay-ms": "5" });
    assert.equal(res.status, 200, res.text);
    const events = readSse(res.text);
    assert.deepEqual(
      events.map((e) => e.event),
      ["message_start", "content_block_start", ...Array(6).fill("content_block_delta"), "content_block_stop", "message_delta", "message_stop"],
    );
    const start = JSON.parse(events[0].data);
    assert.equal(start.message.usage.input_tokens, countTokens("Answer briefly.") + countTokens("What is a service mesh?"));
    assert.equal(start.message.model, "claude-3-5-sonnet-latest");
    assert.equal(JSON.parse(events.at(-2)!.data).usage.output_tokens, 6);
    const text = events.filter((e) => e.event === "content_block_delta").map((e) => JSON.parse(e.data).delta.text).join("");
    assert.equal(countTokens(text), 6);

    const json = await postJson(envoy.url("/v1/messages"), { ...body, stream: false });
    assert.equal(json.json.type, "message");
    assert.equal(json.json.usage.output_tokens, 6);
    assert.equal(json.json.stop_reason, "max_tokens");
  });

  envoyTest("error, reset and malformed-body controls", passthrough, async (envoy) => {
    const chat = { model: "gpt-4o", messages: [{ role: "user", content: "hi" }] };
    const limited = await postJson(envoy.url("/v1/chat/completions"), chat, { "x-mock-status": "429" });
    assert.equal(limited.status, 429);
    assert.equal(limited.json.error.type, "rate_limit_exceeded");
    const overloaded = await postJson(envoy.url("/v1/messages"), chat, { "x-mock-status": "529" });
    assert.equal(overloaded.status, 529);
    assert.deepEqual(overloaded.json, { type: "error", error: { type: "overloaded_error", message: overloaded.json.error.message } });

    const broken = await postJson(envoy.url("/v1/chat/completions"), "{not json");
    assert.equal(broken.status, 400);
    assert.equal(broken.json.error.type, "invalid_request_error");
    const brokenAnthropic = await postJson(envoy.url("/v1/messages"), "[1,");
    assert.equal(brokenAnthropic.json.type, "error");

    const started = Date.now();
    const slow = await postJson(envoy.url("/v1/chat/completions"), chat, { "x-mock-latency-ms": "300" });
    assert.equal(slow.status, 200);
    assert.ok(Date.now() - started >= 300);

    // Reset in the middle of a JSON body: the client sees a broken response, not a short one.
    await assert.rejects(postJson(envoy.url("/v1/chat/completions"), chat, { "x-mock-reset-after": "10" }));

    // Reset before headers: Envoy turns it into its own 503.
    const early = await postJson(envoy.url("/v1/chat/completions"), chat, { "x-mock-reset-after": "0" });
    assert.equal(early.status, 503);
    assert.match(early.text, /reset|disconnect|termination/);

    // Reset mid-stream: headers and the first events arrive, then the stream breaks off.
    const raw = await rawHttp(
      envoy.ports.LISTEN_PORT,
      [
        "POST /v1/chat/completions HTTP/1.1",
        "host: llm",
        "content-type: application/json",
        "x-mock-reset-after: 2",
        `content-length: ${Buffer.byteLength(JSON.stringify({ ...chat, stream: true }))}`,
        "",
        JSON.stringify({ ...chat, stream: true }),
      ].join("\r\n"),
      { timeoutMs: 3000 },
    );
    assert.match(raw, /^HTTP\/1\.1 200/);
    assert.equal((raw.match(/data: /g) ?? []).length, 2);
    assert.ok(!raw.includes("[DONE]"));
    assert.ok(!raw.endsWith("0\r\n\r\n"), "a reset stream must not end with the final chunk");

    const stats = await envoy.stats();
    assert.ok((stats.get("cluster.mock_llm.upstream_rq_total") ?? 0) >= 6);
  });

  envoyTest("log capture holds Envoy's startup lines", passthrough, async (envoy) => {
    await envoy.waitForLog(/starting main dispatch loop/, 5000);
    assert.match(envoy.log(), /initializing epoch 0/);
    assert.ok(envoy.pid > 0);
    const mark = envoy.log().length;
    await assert.rejects(envoy.waitForLog(/this line never appears/, 200, mark), /no log line matched/);
  });
});
