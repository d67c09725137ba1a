// The usage tracker that the throttle and metrics filters run over every answer, compiled for Node
// (build/kernels.wasm) and fed the mock model's real answers split every which way, as Envoy may
// hand a body over: the count is the usage the answer reports, else the estimate of its text.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readSse } from "../tooling/http.ts";
import { ensureKernelsBuilt, type Kernels, loadKernels } from "../tooling/kernels.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";

const hello = [{ role: "user", content: "Say hello to the mesh." }];
const CHUNKS = [0, 1, 2, 3, 7, 16, 61, 256];

let mock: MockLlm;
let kernels: Kernels;

/** The raw answer body, as far as it arrives (a stream the mock cuts ends early). */
async function answer(path: string, body: object, headers: Record<string, string> = {}): Promise<Uint8Array> {
  const res = await fetch(mock.url + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  const parts: Uint8Array[] = [];
  try {
    for await (const part of res.body!) parts.push(part as Uint8Array);
  } catch {
    // The mock reset the connection: what came is what a filter saw.
  }
  return new Uint8Array(Buffer.concat(parts));
}

/** The tracker's count for every chunk size, which must all agree. */
function counted(body: Uint8Array, stream: boolean): number {
  const counts = CHUNKS.map((chunk) => kernels.trackUsage(body, stream, chunk));
  assert.deepEqual(counts, CHUNKS.map(() => counts[0]), "the count depends on where the body is split");
  return counts[0];
}

const text = (body: Uint8Array) => new TextDecoder().decode(body);
const events = (body: Uint8Array) => readSse(text(body)).filter((e) => e.data !== "[DONE]").map((e) => JSON.parse(e.data));

describe("the usage tracker on real answers", () => {
  before(async () => {
    ensureKernelsBuilt();
    kernels = await loadKernels();
    mock = await startMockLlm({ name: "usage" });
  });
  after(() => mock.close());

  test("takes the usage an answer reports, in JSON and in streams, from OpenAI and Anthropic", async () => {
    const chat = await answer("/v1/chat/completions", { model: "gpt-4o", messages: hello, max_tokens: 40 });
    assert.equal(counted(chat, false), JSON.parse(text(chat)).usage.completion_tokens);
    const chatStream = await answer("/v1/chat/completions", { model: "gpt-4o", messages: hello, stream: true, stream_options: { include_usage: true } }, { "x-mock-completion-tokens": "300" });
    assert.equal(counted(chatStream, true), 300);
    const messages = await answer("/v1/messages", { model: "claude-3-5-haiku", messages: hello, max_tokens: 30 });
    assert.equal(counted(messages, false), JSON.parse(text(messages)).usage.output_tokens);
    const messageStream = await answer("/v1/messages", { model: "claude-3-5-haiku", messages: hello, max_tokens: 200, stream: true }, { "x-mock-completion-tokens": "150" });
    assert.equal(counted(messageStream, true), 150);
  });

  test("counts the text of answers that report no usage, or are cut before they do", async () => {
    const chatStream = await answer("/v1/chat/completions", { model: "gpt-4o", messages: hello, stream: true }, { "x-mock-completion-tokens": "120" });
    const chatText = events(chatStream).map((e) => e.choices[0]?.delta?.content ?? "").join("");
    assert.equal(counted(chatStream, true), kernels.estimateTokens(chatText, "o200k"));
    const legacy = await answer("/v1/completions", { model: "gpt-3.5-turbo-instruct", prompt: "Say hello", stream: true }, { "x-mock-completion-tokens": "50" });
    const legacyText = events(legacy).map((e) => e.choices[0]?.text ?? "").join("");
    assert.equal(counted(legacy, true), kernels.estimateTokens(legacyText, "o200k"));
    const cut = await answer("/v1/messages", { model: "claude-3-5-haiku", messages: hello, max_tokens: 50, stream: true }, { "x-mock-completion-tokens": "50", "x-mock-reset-after": "9" });
    const cutText = events(cut).filter((e) => e.type === "content_block_delta").map((e) => e.delta.text).join("");
    assert.ok(cutText.length > 0 && !text(cut).includes("message_delta"), "the stream was cut before its usage");
    assert.equal(counted(cut, true), kernels.estimateTokens(cutText, "o200k"));
  });
});
