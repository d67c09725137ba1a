// GET /v1/models through llm-mesh says what the gateway serves: the demo configuration
// (envoy/demo.yaml, envoy/plugin-config/*.json) in the real Envoy, as four filters and as the one
// module, with the official OpenAI and Anthropic clients. Admission lists the model server's models
// it admits and no name that exists only behind the router; every listed name is then accepted,
// and a refused model is answered 404 without asking the model server. Whatever the model server
// answers (a larger or smaller list, an empty one, an error, a chunked one, one past the body limit),
// the answer is right, its content-length too, and nothing is buffered past max_body_bytes.
import Anthropic from "@anthropic-ai/sdk";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type EnvoyHandle, envoyTest, startEnvoy } from "../tooling/envoy.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { useModelMocks } from "../tooling/model-mocks.ts";
import { asOneModule } from "../tooling/one-module.ts";
import { settlesAt } from "../tooling/stats.ts";

const hello = [{ role: "user" as const, content: "Say hello to the mesh." }];

/** envoy/plugin-config/admission.json: gpt-4o-mini, claude-3-5-haiku*, llama-3*, unknown models refused. */
const demoAdmission = JSON.parse(readFileSync(join(repoDir, "envoy", "plugin-config", "admission.json"), "utf8"));

/** What the primary model server lists: more than admission admits, and not every name it admits. */
const PRIMARY_MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-3-5-sonnet-latest", "claude-3-5-haiku-20241022", "llama-3.1-8b-instruct"];
const ADMITTED = ["gpt-4o-mini", "claude-3-5-haiku-20241022", "llama-3.1-8b-instruct"];
/**
 * The canary's server serves the demo router's rewrite targets: the canary's gpt-4o-mini-2024-07-18
 * and the shadow's llama-3-8b, which admission's llama-3* would admit. Neither may be listed.
 */
const CANARY_MODELS = ["gpt-4o-mini-2024-07-18", "llama-3-8b", "gpt-4o-mini"];

interface ListAnswer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
  ids: string[];
}

async function getList(envoy: EnvoyHandle, headers: Record<string, string> = {}, path = "/v1/models"): Promise<ListAnswer> {
  const res = await fetch(envoy.url(path), { headers });
  const text = await res.text();
  const json = JSON.parse(text);
  return { status: res.status, headers: res.headers, text, json, ids: (json.data ?? []).map((m: { id: string }) => m.id) };
}

/**
 * One held chat request, which shows the worker that Envoy hands a held request its body (the
 * header-pause flag is there): only then does admission hold a list's headers for its length.
 */
async function showTheFlag(envoy: EnvoyHandle): Promise<void> {
  const res = await fetch(envoy.url("/v1/chat/completions"), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }) });
  await res.arrayBuffer();
  assert.equal(res.status, 200);
}

/** The answer's declared length is its length: a rewritten list must not keep the model server's. */
function assertLength(answer: ListAnswer): void {
  assert.equal(answer.headers.get("content-length"), String(Buffer.byteLength(answer.text)), answer.text.slice(0, 200));
}

/** The configuration's list: its one exact name, gpt-4o-mini, in the client's shape. */
function assertConfigList(answer: ListAnswer, anthropic = false): void {
  assert.equal(answer.status, 200, answer.text);
  assertLength(answer);
  assert.deepEqual(answer.ids, ["gpt-4o-mini"]);
  if (anthropic) assert.deepEqual(answer.json, { data: [{ type: "model", id: "gpt-4o-mini", display_name: "gpt-4o-mini", created_at: "1970-01-01T00:00:00Z" }], has_more: false, first_id: "gpt-4o-mini", last_id: "gpt-4o-mini" });
  else assert.deepEqual(answer.json, { object: "list", data: [{ id: "gpt-4o-mini", object: "model", created: 0, owned_by: "llm-mesh" }] });
}

/** Counter values of requests_total by API, summed over the main listener's routes (the shadow listener counts mirrored copies). */
async function requestsByApi(envoy: EnvoyHandle): Promise<Map<string, number>> {
  const byApi = new Map<string, number>();
  for (const [name, value] of await envoy.stats()) {
    if (!name.startsWith("wasmcustom.gen_ai_server_requests_total") || name.includes("llm_route=.=shadow;.;")) continue;
    const api = /llm_api=\.=(.*?);\.;/.exec(name)![1];
    byApi.set(api, (byApi.get(api) ?? 0) + value);
  }
  return byApi;
}

for (const [chain, edit] of [["four filters", undefined], ["one module", asOneModule]] as const) {
  describe(`the model list through the demo's ${chain}`, () => {
    const mocks = useModelMocks();
    const demo = () => ({ scenario: "demo", vars: mocks.ports(), concurrency: 2, edit });
    // One worker, so that the request showing the flag and the lists meet the same VM.
    const oneWorker = () => ({ ...demo(), concurrency: 1 });
    before(() => {
      mocks.primary.setDefault({ models: PRIMARY_MODELS });
      mocks.canary.setDefault({ models: CANARY_MODELS });
    });
    const resetMocks = () => mocks.all().forEach((m) => m.reset());

    envoyTest("the official clients list only admitted names, and each is then accepted; a refused model is not found", demo, async (envoy) => {
      resetMocks();
      const openai = new OpenAI({ apiKey: "sk-test", baseURL: envoy.url("/v1"), maxRetries: 0 });
      const anthropic = new Anthropic({ apiKey: "sk-ant-test", baseURL: envoy.url(""), maxRetries: 0 });

      const listed: string[] = [];
      for await (const model of openai.models.list()) listed.push(model.id);
      assert.deepEqual(listed, ADMITTED);
      const anthropicListed = [];
      for await (const model of anthropic.models.list()) anthropicListed.push(model);
      assert.deepEqual(anthropicListed.map((m) => m.id), ADMITTED);
      // The model server's own entries, in Anthropic's shape because the client sent anthropic-version.
      assert.equal(anthropicListed[0].display_name, "Mock gpt-4o-mini");
      assert.equal(anthropicListed[0].type, "model");

      let chats = 0;
      for (const [i, model] of listed.entries()) {
        const headers = { "x-tenant": `listed-${i}` };
        if (model.startsWith("claude-")) {
          const message = await anthropic.messages.create({ model, max_tokens: 8, messages: hello }, { headers });
          assert.equal(message.type, "message");
        } else {
          // (The demo's rollout sends a tenth of gpt-4o-mini to the canary, which answers as gpt-4o-mini-2024-07-18.)
          const completion = await openai.chat.completions.create({ model, messages: hello, max_tokens: 8 }, { headers });
          assert.equal(completion.object, "chat.completion");
          chats++;
        }
      }
      // And what the model server lists but the list left out is refused.
      for (const model of PRIMARY_MODELS.filter((m) => !listed.includes(m))) {
        const refused = model.startsWith("claude-")
          ? anthropic.messages.create({ model, max_tokens: 8, messages: hello }, { headers: { "x-tenant": model } })
          : model.startsWith("text-embedding-")
            ? openai.embeddings.create({ model, input: "hi" }, { headers: { "x-tenant": model } })
            : openai.chat.completions.create({ model, messages: hello, max_tokens: 8 }, { headers: { "x-tenant": model } });
        await assert.rejects(refused, (err: InstanceType<typeof OpenAI.APIError> | InstanceType<typeof Anthropic.APIError>) => err.status === 400, model);
        if (model.startsWith("gpt-")) chats++;
      }

      const one = await openai.models.retrieve("gpt-4o-mini");
      assert.equal(one.id, "gpt-4o-mini");
      await assert.rejects(openai.models.retrieve("gpt-4o"), (err: InstanceType<typeof OpenAI.NotFoundError>) => {
        assert.equal(err.status, 404);
        assert.equal(err.code, "model_not_found");
        return true;
      });
      await assert.rejects(anthropic.models.retrieve("claude-3-5-sonnet-latest"), (err: InstanceType<typeof Anthropic.NotFoundError>) => {
        assert.equal(err.status, 404);
        assert.equal((err.error as { error: { type: string } }).error.type, "not_found_error");
        return true;
      });
      const asked = mocks.primary.requests.filter((r) => r.path.startsWith("/v1/models/")).map((r) => r.path);
      assert.deepEqual(asked, ["/v1/models/gpt-4o-mini"], "refused models are answered without asking the model server");

      // A beta user's list goes to the canary, whose server serves the router's rewrite targets under
      // their own names: only the name clients use is listed, and it is accepted.
      const beta = new OpenAI({ apiKey: "sk-test", baseURL: envoy.url("/v1"), maxRetries: 0, defaultHeaders: { "x-user-group": "beta" } });
      const betaListed: string[] = [];
      for await (const model of beta.models.list()) betaListed.push(model.id);
      assert.deepEqual(betaListed, ["gpt-4o-mini"]);
      assert.equal(mocks.canary.requests.filter((r) => r.path === "/v1/models").length, 1);
      const betaChat = await beta.chat.completions.create({ model: "gpt-4o-mini", messages: hello, max_tokens: 4 }, { headers: { "x-tenant": "beta" } });
      assert.equal(betaChat.object, "chat.completion");
      chats++;

      // Metrics count the list and model requests under their own API, not as chat.
      const expected = { "openai.models": 4, "anthropic.models": 2, "openai.chat": chats };
      const counted = async () => {
        const byApi = await requestsByApi(envoy);
        return Object.fromEntries(Object.keys(expected).map((api) => [api, byApi.get(api)]));
      };
      await settlesAt(counted, expected, "requests counted by API");
    });

    envoyTest("whatever the model server lists, the answer and its content-length are right", oneWorker, async (envoy) => {
      resetMocks();
      await showTheFlag(envoy);
      const larger = await getList(envoy, { "x-mock-models-count": "3000" });
      assert.equal(larger.status, 200);
      assertLength(larger);
      assert.deepEqual(larger.ids, ADMITTED);
      assert.deepEqual(larger.json.data[0], { id: "gpt-4o-mini", object: "model", created: 1700000000, owned_by: "mock" }, "entries keep their fields");

      // Fewer than admission admits: gpt-4o-mini, which the configuration names, is not added.
      const smaller = await getList(envoy, { "x-mock-models": "llama-3.1-70b,gpt-4o" });
      assertLength(smaller);
      assert.deepEqual(smaller.ids, ["llama-3.1-70b"]);

      const empty = await getList(envoy, { "x-mock-models": "" });
      assertLength(empty);
      assert.deepEqual(empty.json, { object: "list", data: [] });
      const emptyAnthropic = await getList(envoy, { "x-mock-models": "", "anthropic-version": "2023-06-01" });
      assertLength(emptyAnthropic);
      assert.deepEqual(emptyAnthropic.json, { data: [], has_more: false, first_id: null, last_id: null });

      const chunked = await getList(envoy, { "x-mock-models-chunks": "6", "x-mock-chunk-delay-ms": "30", "x-mock-models-count": "200" });
      assertLength(chunked);
      assert.deepEqual(chunked.ids, ADMITTED);

      // An OpenAI-compatible server answers an Anthropic client in OpenAI's shape: converted.
      const converted = await getList(envoy, { "anthropic-version": "2023-06-01", "x-mock-models-shape": "openai" });
      assertLength(converted);
      assert.deepEqual(converted.json.data[1], { type: "model", id: "claude-3-5-haiku-20241022", display_name: "claude-3-5-haiku-20241022", created_at: "2023-11-14T22:13:20Z" });
      assert.equal(converted.json.last_id, "llama-3.1-8b-instruct");

      // No list to read: the configuration's exact names.
      assertConfigList(await getList(envoy, { "x-mock-status": "500" }));
      assertConfigList(await getList(envoy, { "x-mock-status": "404" }));
      assertConfigList(await getList(envoy, { "x-mock-status": "503", "anthropic-version": "2023-06-01" }), true);
      // A credentials error stays one.
      const unauthorized = await getList(envoy, { "x-mock-status": "401" });
      assert.equal(unauthorized.status, 401);
      assert.equal(unauthorized.json.error.type, "authentication_error");
      // The model server crashing before it answers is an error too.
      assertConfigList(await getList(envoy, { "x-mock-reset-after": "0" }));
    });

    envoyTest("a list past the body limit is not buffered: the configuration's list answers, and the warning says what to raise", oneWorker, async (envoy) => {
      resetMocks();
      await showTheFlag(envoy);
      // 120000 entries are 9.4 MB, past Envoy's own 8 MiB buffer limit: buffered whole, Envoy would fail the request.
      const declared = await getList(envoy, { "x-mock-models-count": "120000" });
      assertConfigList(declared);
      const streamed = await getList(envoy, { "x-mock-models-count": "120000", "x-mock-models-chunks": "40" });
      assertConfigList(streamed);
      // The opening, then 9.4 MB in one write: Envoy hands that over in pieces of megabytes, which must
      // not go into its own buffer (it fails the answer with a 500 when one takes it past its limit).
      const oneWrite = await getList(envoy, { "x-mock-models-count": "120000", "x-mock-models-chunks": "2", "x-mock-chunk-delay-ms": "100" });
      assertConfigList(oneWrite);
      await envoy.waitForLog(/llm-admission\[\d+\]: the model server's model list is over 1048576 bytes, the most this filter buffers \(the largest max_body_bytes\); .*raise models\.default\.max_body_bytes/);
      // The worker still answers lists it can read.
      assert.deepEqual((await getList(envoy)).ids, ADMITTED);
    });
  });
}

describe("the model list with admission alone", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());
  const alone = (config: object) => () => ({ scenario: "admission", vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: config } });

  envoyTest("without hold_headers the list goes out without content-length, and a list past the limit is cut short", alone({ ...demoAdmission, hold_headers: false }), async (envoy) => {
    const filtered = await getList(envoy, { "x-mock-models": PRIMARY_MODELS.join(",") });
    assert.equal(filtered.status, 200);
    assert.equal(filtered.headers.get("content-length"), null);
    assert.deepEqual(filtered.ids, ADMITTED);
    // Before its headers went on, an error is still answered whole.
    assertConfigList(await getList(envoy, { "x-mock-status": "500" }));
    const streamed = await getList(envoy, { "x-mock-models-count": "120000", "x-mock-models-chunks": "40" });
    assert.equal(streamed.status, 200);
    assert.deepEqual(streamed.json, { object: "list", data: [{ id: "gpt-4o-mini", object: "model", created: 0, owned_by: "llm-mesh" }] });
    assert.deepEqual((await getList(envoy, { "x-mock-models": PRIMARY_MODELS.join(",") })).ids, ADMITTED);
  });

  envoyTest("before a held request showed the header-pause flag, a list goes out whole without content-length", () => ({ ...alone(demoAdmission)(), concurrency: 1 }), async (envoy) => {
    const first = await getList(envoy, { "x-mock-models": PRIMARY_MODELS.join(",") });
    assert.equal(first.headers.get("content-length"), null);
    assert.deepEqual(first.ids, ADMITTED);
    await showTheFlag(envoy);
    assertLength(await getList(envoy, { "x-mock-models": PRIMARY_MODELS.join(",") }));
  });

  // envoy/hold-headers.yaml is admission without allow_on_headers_stop_iteration: holding an answer's
  // headers there would keep its body from the filter, and the client would wait for Envoy's timeout.
  envoyTest("without the header-pause flag a list never waits: it goes out whole without content-length", () => ({ scenario: "hold-headers", vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: demoAdmission } }), async (envoy) => {
    for (let i = 0; i < 3; i++) {
      const list = await getList(envoy, { "x-mock-models": PRIMARY_MODELS.join(",") });
      assert.equal(list.headers.get("content-length"), null);
      assert.deepEqual(list.ids, ADMITTED);
    }
  });

  envoyTest("model_list: upstream, or admission that refuses no model, passes the list on untouched", alone({ ...demoAdmission, model_list: "upstream" }), async (envoy) => {
    const untouched = await getList(envoy, { "x-mock-models": PRIMARY_MODELS.join(",") });
    assert.deepEqual(untouched.ids, PRIMARY_MODELS);
    const retrieved = await fetch(envoy.url("/v1/models/gpt-4o"));
    assert.equal(retrieved.status, 200);
    assert.equal((await retrieved.json()).id, "gpt-4o");
  });

  test("a bad model_list is refused at start, naming the field and the reason", async () => {
    await assert.rejects(
      startEnvoy({ scenario: "admission", vars: { UPSTREAM_PORT: mock.port, ADMISSION_CONFIG: { ...demoAdmission, model_list: "filtered" } }, readyTimeoutMs: 15_000 }),
      /llm-admission\[\d+\]: invalid configuration, refusing to start: model_list: must be one of admitted, upstream, got "filtered"/,
    );
  });
});
