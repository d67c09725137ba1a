// Each answer is read once per request: in the recommended chain (admission, throttle, metrics) the
// metrics filter sees the response first, reads its usage and hands it to the throttle filter
// (assembly/llm/usage-handoff.ts). In the real Envoy: the throttle filter settles exactly what
// metrics read, for answers that report usage, that do not, and that are cut short; and the answer's
// bytes are copied into the filters' VMs once instead of twice.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe } from "node:test";
import { type EnvoyHandle, envoyTest, type EnvoyTestOptions } from "../tooling/envoy.ts";
import { type HttpResult, postJson, postPartial, readSse } from "../tooling/http.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { stat, statsSettleAt } from "../tooling/stats.ts";

const admission = { hold_headers: true, unknown_model: "allow" };
const metrics = { models: ["gpt-4o", "claude-3-5-haiku"] };
const throttle = (tokenizer: string) => ({
  tokenizer,
  rules: [{ name: "all", key: ["header:x-tenant"], limits: { tokens_per_minute: 1_000_000, max_in_flight: 100 } }],
});

const hello = [{ role: "user", content: "Say hello to the mesh." }];
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

const throttleStat = (name: string) => `wasmcustom.llm_throttle.${name}`;

/** Waits until nothing is in flight, and still nothing a flush period later: a stream settles its account when Envoy ends it. */
function settled(envoy: EnvoyHandle): Promise<void> {
  return statsSettleAt(envoy, { [throttleStat("all.in_flight")]: 0, [throttleStat("all.tokens_reserved")]: 0 }, 5000);
}

/** The access log's records; Envoy writes the file when it stops, so this stops it: call it last. */
async function accessLog(envoy: EnvoyHandle): Promise<any[]> {
  await envoy.stop();
  const path = join(envoy.tmpDir, "access.log");
  return (existsSync(path) ? readFileSync(path, "utf8") : "").split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/** The usage an answer reported: "<prompt>,<completion>" as the hand-over writes it. */
function reported(res: HttpResult): string {
  if (res.json?.usage) {
    const u = res.json.usage;
    return `${u.prompt_tokens ?? u.input_tokens},${u.completion_tokens ?? u.output_tokens}`;
  }
  let prompt = -1;
  let completion = -1;
  for (const event of readSse(res.text)) {
    if (event.data === "[DONE]") continue;
    const data = JSON.parse(event.data);
    if (data.type === "message_start") prompt = data.message.usage.input_tokens;
    else if (data.type === "message_delta") completion = data.usage.output_tokens;
    else if (data.usage) [prompt, completion] = [data.usage.prompt_tokens, data.usage.completion_tokens];
  }
  assert.ok(prompt >= 0 && completion >= 0, `no usage in ${res.text.slice(0, 300)}`);
  return `${prompt},${completion}`;
}

/** Bytes of response bodies Envoy copied into the VMs, from its wasm:trace log of host calls. */
function responseBytesCopied(log: string): number {
  let bytes = 0;
  for (const m of log.matchAll(/\[vm->host\] env\.proxy_get_buffer_bytes\(1, \d+, (\d+),/g)) bytes += Number(m[1]);
  return bytes;
}

describe("the answer is read once: llm-metrics hands its usage to llm-throttle", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());
  const scenario = (tokenizer: string, trace = false) => (): EnvoyTestOptions => ({
    scenario: "usage-handoff",
    vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: admission, THROTTLE_CONFIG: throttle(tokenizer), METRICS_CONFIG: metrics },
    concurrency: 1,
    ...(trace ? { logLevel: "info", componentLogLevel: "wasm:trace" } : {}),
  });

  envoyTest("throttle settles the usage metrics read: reported, counted from the text, and cut short", scenario("o200k"), async (envoy) => {
    const chat = envoy.url("/v1/chat/completions");
    const messages = envoy.url("/v1/messages");
    const tenant = { "x-tenant": "t-handoff" };
    const answers = [
      await postJson(chat, { model: "gpt-4o", messages: hello, max_tokens: 12 }, tenant),
      await postJson(chat, { model: "gpt-4o", messages: hello, max_tokens: 9, stream: true, stream_options: { include_usage: true } }, tenant),
      await postJson(messages, { model: "claude-3-5-haiku", messages: hello, max_tokens: 7 }, tenant),
      await postJson(messages, { model: "claude-3-5-haiku", messages: hello, max_tokens: 5, stream: true }, tenant),
    ];
    assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200]);
    // No usage in the stream, or none before the upstream cut it: the text that arrived is counted.
    const unreported = await postJson(chat, { model: "gpt-4o", messages: hello, max_tokens: 6, stream: true }, tenant);
    const cut = await postPartial(chat, { model: "gpt-4o", messages: hello, max_tokens: 12, stream: true }, { ...tenant, "x-mock-reset-after": "4" });
    const cutAnthropic = await postPartial(messages, { model: "claude-3-5-haiku", messages: hello, max_tokens: 12, stream: true }, { ...tenant, "x-mock-reset-after": "4" });
    assert.equal(cut.complete, false, "the OpenAI stream was cut");
    assert.equal(cutAnthropic.complete, false, "the Anthropic stream was cut");
    const failed = await postJson(chat, { model: "gpt-4o", messages: hello }, { ...tenant, "x-mock-status": "500" });
    assert.equal(failed.status, 500);

    await settled(envoy);
    const charged = await stat(envoy, throttleStat("all.tokens_used"));
    const records = await accessLog(envoy);
    assert.equal(records.length, 8);
    const [json, stream, anthropicJson, anthropicStream, noUsage, cutRecord, cutAnthropicRecord, failedRecord] = records;

    // Metrics announced and published for every answer; the published usage is what the answers reported.
    for (const r of records) assert.equal(r.usage_tracked, "o200k");
    assert.deepEqual([json, stream, anthropicJson, anthropicStream].map((r) => r.usage), answers.map(reported));
    const words = (text: string) => readSse(text).filter((e) => e.data !== "[DONE]").map((e) => JSON.parse(e.data)).map((d) => d.choices?.[0]?.delta?.content ?? d.delta?.text ?? "").join("").match(/ \w+/g)?.length ?? 0;
    const [noUsagePrompt, noUsageCompletion] = noUsage.usage.split(",").map(Number);
    assert.equal(noUsagePrompt, -1);
    assert.ok(Math.abs(noUsageCompletion - words(unreported.text)) <= 1, `counted ${noUsageCompletion} for ${words(unreported.text)} words`);
    assert.equal(cutRecord.usage.split(",")[0], "-1");
    assert.ok(Math.abs(Number(cutRecord.usage.split(",")[1]) - words(cut.text)) <= 1, `cut: ${cutRecord.usage} for ${words(cut.text)} words`);
    // message_start already told the real input before the cut.
    const anthropicInput = JSON.parse(readSse(cutAnthropic.text)[0].data).message.usage.input_tokens;
    const [cutPrompt, cutCompletion] = cutAnthropicRecord.usage.split(",").map(Number);
    assert.equal(cutPrompt, anthropicInput);
    assert.ok(Math.abs(cutCompletion - words(cutAnthropic.text)) <= 1, `cut: ${cutAnthropicRecord.usage} for ${words(cutAnthropic.text)} words`);
    assert.equal(failedRecord.status, 500);

    // What the throttle filter charged is what metrics recorded, answer by answer: each 2xx answer's
    // prompt (reported, else admission's estimate) plus its completion; the failed one costs nothing.
    const recorded = records.filter((r) => r.status >= 200 && r.status < 300).reduce((sum, r) => sum + Number(r.prompt_tokens) + Number(r.completion_tokens), 0);
    assert.equal(charged, recorded);
  });

  envoyTest("each answer is copied into the VMs once, not once per filter", scenario("o200k", true), async (envoy) => {
    const bytes = await sendAnswers(envoy);
    const copied = await copiedAtLeast(envoy, bytes);
    assert.equal(copied, bytes, "the throttle filter read the response itself");
  });

  envoyTest("a throttle filter counting text with another tokenizer than metrics reads the answer itself", scenario("cl100k", true), async (envoy) => {
    const bytes = await sendAnswers(envoy);
    const copied = await copiedAtLeast(envoy, 2 * bytes);
    assert.equal(copied, 2 * bytes);
    await settled(envoy);
    const records = await accessLog(envoy);
    assert.deepEqual(records.map((r) => r.usage_tracked), ["o200k", "o200k", "o200k"]);
  });

  /** A JSON answer, a stream with usage and one without; the bytes of their bodies. */
  async function sendAnswers(envoy: EnvoyHandle): Promise<number> {
    const chat = envoy.url("/v1/chat/completions");
    const tenant = { "x-tenant": "t-copies" };
    const results = [
      await postJson(chat, { model: "gpt-4o", messages: hello, max_tokens: 16 }, tenant),
      await postJson(chat, { model: "gpt-4o", messages: hello, max_tokens: 16, stream: true, stream_options: { include_usage: true } }, tenant),
      await postJson(chat, { model: "gpt-4o", messages: hello, max_tokens: 16, stream: true }, tenant),
    ];
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200]);
    return results.reduce((sum, r) => sum + Buffer.byteLength(r.text), 0);
  }

  /** The response bytes copied so far, once the log shows at least `bytes` (Envoy writes it asynchronously). */
  async function copiedAtLeast(envoy: EnvoyHandle, bytes: number): Promise<number> {
    const deadline = Date.now() + 5000;
    while (responseBytesCopied(envoy.log()) < bytes && Date.now() < deadline) await sleep(50);
    await sleep(300);
    return responseBytesCopied(envoy.log());
  }
});
