// The admission filter in the real Envoy, in front of the mock LLM: what is rejected never reaches
// the upstream, what is admitted arrives intact (or clamped) with the facts later filters need.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { envoyTest, startEnvoy } from "../tooling/envoy.ts";
import { postJson, rawHttp, readSse } from "../tooling/http.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";

const limits = {
  hold_headers: true,
  models: {
    default: { max_body_bytes: 65536, max_prompt_tokens: 200, max_output_tokens: 512, output_limit_action: "clamp" },
    "gpt-4o": {},
    "gpt-4o-mini": { max_prompt_tokens: 1000 },
    "claude-3-5-haiku*": { output_limit_action: "reject" },
  },
  unknown_model: "reject",
};

const hello = [{ role: "user", content: "Say hello to the mesh." }];

describe("admission filter", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());
  const scenario = (config: object = limits) => () => ({ scenario: "admission", vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: config } });

  envoyTest("admits a request within limits and forwards its facts, dropping forged ones", scenario(), async (envoy) => {
    mock.reset();
    const res = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o-mini", messages: hello, max_tokens: 20 }, {
      "x-llm-model": "forged",
      "x-llm-prompt-tokens": "1",
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(mock.requests.length, 1);
    const seen = mock.requests[0].headers;
    assert.equal(seen["x-llm-model"], "gpt-4o-mini");
    assert.equal(seen["x-llm-api"], "openai.chat");
    assert.equal(seen["x-llm-max-tokens"], "20");
    assert.equal(seen["x-llm-stream"], "false");
    const estimate = Number(seen["x-llm-prompt-tokens"]);
    assert.ok(estimate >= 10 && estimate <= 30, `estimate ${estimate}`);
  });

  envoyTest("rejects from content-length alone, before the body is read", scenario(), async (envoy) => {
    mock.reset();
    const head = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 70000\r\n\r\n`;
    const raw = await rawHttp(envoy.ports.LISTEN_PORT, head, { timeoutMs: 3000 });
    assert.match(raw, /^HTTP\/1\.1 413/);
    assert.match(raw, /"message":"Request body is 70000 bytes; the limit is 65536 bytes\."/);
    assert.match(raw, /"code":"request_too_large"/);
    assert.equal(mock.requests.length, 0);
  });

  envoyTest("stops a chunked body as soon as it passes the limit", scenario(), async (envoy) => {
    mock.reset();
    const chunk = "x".repeat(8192);
    let request = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n`;
    for (let i = 0; i < 12; i++) request += `2000\r\n${chunk}\r\n`;
    const raw = await rawHttp(envoy.ports.LISTEN_PORT, request + "0\r\n\r\n", { timeoutMs: 3000 });
    assert.match(raw, /^HTTP\/1\.1 413/);
    assert.match(raw, /the limit is 65536 bytes/);
    assert.equal(mock.requests.length, 0);
  });

  envoyTest("rejects a prompt over the model's token limit, in each API's own error shape", scenario(), async (envoy) => {
    mock.reset();
    const long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    const openai = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: [{ role: "user", content: long }] });
    assert.equal(openai.status, 413);
    assert.equal(openai.json.error.code, "context_length_exceeded");
    assert.equal(openai.json.error.type, "invalid_request_error");
    assert.match(openai.json.error.message, /^The prompt is estimated at \d+ tokens; the limit for model `gpt-4o` is 200 tokens\.$/);

    const anthropic = await postJson(envoy.url("/v1/messages"), { model: "claude-3-5-haiku-latest", max_tokens: 10, messages: [{ role: "user", content: long }] });
    assert.equal(anthropic.status, 413);
    assert.equal(anthropic.json.type, "error");
    assert.equal(anthropic.json.error.type, "request_too_large");
    assert.match(anthropic.json.error.message, /limit for model `claude-3-5-haiku-latest` is 200 tokens/);
    assert.equal(mock.requests.length, 0);
  });

  envoyTest("clamps an output budget by rewriting the body, or rejects it, per model", scenario(), async (envoy) => {
    mock.reset();
    const clamped = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, max_tokens: 99999 });
    assert.equal(clamped.status, 200, clamped.text);
    assert.equal(mock.requests.length, 1);
    assert.equal(mock.requests[0].json.max_tokens, 512);
    assert.equal(Number(mock.requests[0].headers["content-length"]), Buffer.byteLength(mock.requests[0].body));
    assert.equal(mock.requests[0].headers["x-llm-max-tokens"], "512");

    const rejected = await postJson(envoy.url("/v1/messages"), { model: "claude-3-5-haiku-latest", max_tokens: 99999, messages: hello });
    assert.equal(rejected.status, 400);
    assert.equal(rejected.json.error.message, "max_tokens is 99999; the limit for model `claude-3-5-haiku-latest` is 512.");
    assert.equal(mock.requests.length, 1);
  });

  envoyTest("rejects unknown models, malformed JSON, invalid UTF-8 and ambiguous duplicates", scenario(), async (envoy) => {
    mock.reset();
    const url = envoy.url("/v1/chat/completions");
    const unknown = await postJson(url, { model: "gpt-9", messages: hello });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.error.code, "model_not_found");
    assert.equal(unknown.json.error.param, "model");

    const broken = await postJson(url, '{"model":"gpt-4o","messages":[');
    assert.equal(broken.status, 400);
    assert.match(broken.json.error.message, /^Invalid request body: the request body is not valid JSON: unexpected end of input at byte 30\.$/);

    const utf8 = await fetch(url, { method: "POST", body: Buffer.concat([Buffer.from('{"model":"gpt-4o","messages":[{"role":"user","content":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}]}')]) });
    assert.equal(utf8.status, 400);
    assert.match(await utf8.text(), /invalid UTF-8 in string/);

    const duplicate = await postJson(url, '{"model":"gpt-4o-mini","messages":[],"model":"gpt-9"}');
    assert.equal(duplicate.status, 400);
    assert.match(duplicate.json.error.message, /duplicate key "model" makes the request ambiguous/);

    const wrongType = await postJson(url, { model: "gpt-4o", messages: hello, max_tokens: "lots" });
    assert.equal(wrongType.status, 400);
    assert.equal(wrongType.json.error.param, "max_tokens");
    assert.equal(mock.requests.length, 0);
  });

  envoyTest("leaves other paths, methods and streamed answers alone", scenario(), async (envoy) => {
    mock.reset();
    const models = await fetch(envoy.url("/v1/models"));
    assert.equal(models.status, 200);
    const stream = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, stream: true, max_tokens: 4 });
    assert.equal(stream.status, 200);
    assert.equal(readSse(stream.text).at(-1)!.data, "[DONE]");
    assert.equal(mock.requests.at(-1)!.headers["x-llm-stream"], "true");
  });

  envoyTest("without hold_headers it still rejects and clamps, streaming the headers first", scenario({ ...limits, hold_headers: false }), async (envoy) => {
    mock.reset();
    const rejected = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-9", messages: hello });
    assert.equal(rejected.status, 400);
    const clamped = await postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o", messages: hello, max_tokens: 99999 });
    assert.equal(clamped.status, 200, clamped.text);
    const admitted = mock.requests.filter((r) => r.json?.model === "gpt-4o");
    assert.equal(admitted.length, 1);
    assert.equal(admitted[0].json.max_tokens, 512);
    assert.equal(admitted[0].headers["x-llm-model"], undefined);
  });
});

describe("admission config validation in Envoy", () => {
  test("Envoy refuses to start with a bad config, naming the field and the reason", async () => {
    await assert.rejects(
      startEnvoy({ scenario: "admission", vars: { UPSTREAM_PORT: 9, ADMISSION_CONFIG: { models: { default: { max_prompt_tokens: -5 } } } }, readyTimeoutMs: 15000 }),
      (error: Error) => {
        assert.match(error.message, /llm-admission\[\d+\]: invalid configuration, refusing to start: models\.default\.max_prompt_tokens: must be an integer from 0 to 100000000, got -5/);
        return true;
      },
    );
  });
});
