// Invalid configurations, filter by filter: each is refused with the field it is wrong at, by the
// filter's own parser (assembly/<filter>/config.ts through build/kernels.wasm), at Envoy's start
// (Envoy does not start), and over filesystem xDS (the update is rejected and the listener Envoy
// already has keeps serving with its old configuration).
import assert from "node:assert/strict";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse, stringify } from "yaml";
import { type ConfigCheckers, loadConfigCheckers } from "../tooling/config-check.ts";
import { repoDir } from "../tooling/envoy-bin.ts";
import { renderScenario, startEnvoy } from "../tooling/envoy.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { MESH_VARS } from "../tooling/fuzz/mesh.ts";
import { stat, waitForStatAtLeast } from "../tooling/stats.ts";
import { Connection } from "./fuzz/raw-client.ts";
import { simpleChat } from "./fuzz/requests.ts";

type Filter = "admission" | "throttle" | "metrics" | "router";

/** [configuration text, the field its error must name ("(config)" for the whole text)]. */
const INVALID: Record<Filter, Array<[string, string]>> = {
  admission: [
    ["{", "(config)"],
    ["[]", "(config)"],
    ["null", "(config)"],
    ['{"hold_headers":true,"hold_headers":false}', "(config)"],
    ['{"modles":{}}', "modles"],
    ['{"apis":"openai.chat"}', "apis"],
    ['{"apis":["openai.chat","openai.audio"]}', "apis[1]"],
    ['{"paths":{"llm/chat":"openai.chat"}}', "paths.llm/chat"],
    ['{"paths":{"/llm/chat":"openai.audio"}}', "paths./llm/chat"],
    ['{"models":{"default":{"max_prompt_tokens":-5}}}', "models.default.max_prompt_tokens"],
    ['{"models":{"default":{"max_body_bytes":0}}}', "models.default.max_body_bytes"],
    ['{"models":{"default":{"max_body_bytes":1.5}}}', "models.default.max_body_bytes"],
    ['{"models":{"default":{"tokenizer":"p50k"}}}', "models.default.tokenizer"],
    ['{"models":{"gpt-4o":{"max_output_tokens":"10"}}}', "models.gpt-4o.max_output_tokens"],
    ['{"models":{"gpt-4o":{"output_limit_action":"truncate"}}}', "models.gpt-4o.output_limit_action"],
    ['{"models":{"gpt-4o":{"max_tokens":10}}}', "models.gpt-4o.max_tokens"],
    ['{"models":{"gpt-*-x":{}}}', "models.gpt-*-x"],
    ['{"unknown_model":"maybe"}', "unknown_model"],
    ['{"invalid_body":true}', "invalid_body"],
    ['{"hold_headers":"yes"}', "hold_headers"],
    ['{"forward_headers":1}', "forward_headers"],
    ['{"model_list":"filtered"}', "model_list"],
    ['{"hold_headers":true,"hold_headers_timeout_ms":5}', "hold_headers_timeout_ms"],
    ['{"hold_headers_timeout_ms":1.5}', "hold_headers_timeout_ms"],
  ],
  throttle: [
    ["{", "(config)"],
    ['{"hold_headers_timeout_ms":5}', "hold_headers_timeout_ms"],
    ['{"rules":{}}', "rules"],
    ['{"rules":[{}]}', "rules[0].key"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{}}]}', "rules[0].limits"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"requests_per_second":0}}]}', "rules[0].limits.requests_per_second"],
    ['{"rules":[{"name":"r","key":["cookie:x"],"limits":{"requests_per_second":5}}]}', "rules[0].key[0]"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"requests_per_second":5},"action":"drop"}]}', "rules[0].action"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"requests_per_second":5},"action":"redirect"}]}', "rules[0].redirect"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"requests_per_second":5},"queue":{"max_wait_ms":10}}]}', "rules[0].queue"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"max_in_flight":1},"action":"queue","queue":{"max_wait_ms":0}}]}', "rules[0].queue.max_wait_ms"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"max_in_flight":1}},{"name":"r","key":["global"],"limits":{"max_in_flight":1}}]}', "rules[1].name"],
    ['{"rules":[{"name":"bad name","key":["global"],"limits":{"requests_per_second":5}}]}', "rules[0].name"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"max_in_flight":5},"match":{"models":["a*b"]}}]}', "rules[0].match.models[0]"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"max_in_flight":5},"match":{"headers":[{"name":"X-Up","exact":"1"}]}}]}', "rules[0].match.headers[0].name"],
    ['{"rules":[{"name":"r","key":["global"],"limits":{"max_in_flight":5},"key_slots":0}]}', "rules[0].key_slots"],
    ['{"tick_ms":0,"rules":[]}', "tick_ms"],
    ['{"tokenizer":"x"}', "tokenizer"],
    ['{"rules":[{"name":"g","key":["global"],"limits":{"tokens_per_minute":100},"backend":"global"}]}', "rate_limit_service"],
    ['{"rate_limit_service":{"domain":"llm-mesh"}}', "rate_limit_service.cluster"],
    ['{"rate_limit_service":{"cluster":"ratelimit","domain":"llm mesh"}}', "rate_limit_service.domain"],
    ['{"rate_limit_service":{"cluster":"ratelimit","domain":"llm-mesh","timeout_ms":0}}', "rate_limit_service.timeout_ms"],
    ['{"rate_limit_service":{"cluster":"ratelimit","domain":"d"},"rules":[{"name":"g","key":["global"],"limits":{"max_in_flight":4},"backend":"global"}]}', "rules[0].limits"],
    ['{"rules":[{"name":"g","key":["global"],"limits":{"tokens_per_minute":100},"on_service_failure":"deny"}]}', "rules[0].on_service_failure"],
  ],
  metrics: [
    ["{", "(config)"],
    ['{"unknown":1}', "unknown"],
    ['{"models":"gpt-4o"}', "models"],
    ['{"models":["a b"]}', "models[0]"],
    ['{"max_models":100000}', "max_models"],
    ['{"tenant_label":true}', "tenant_label"],
    ['{"tenant_header":5}', "tenant_header"],
    ['{"max_series":1}', "max_series"],
    ['{"read_body":"yes"}', "read_body"],
    ['{"max_body_bytes":0}', "max_body_bytes"],
    ['{"records":1}', "records"],
  ],
  router: [
    ["{", "(config)"],
    ['{"targets":{"primary":{}},"hold_headers_timeout_ms":60001}', "hold_headers_timeout_ms"],
    ['{"targets":{}}', "targets"],
    ['{"targets":{"primary":{}},"route_header":""}', "route_header"],
    ['{"targets":{"primary":{}},"route_header":"content-length"}', "route_header"],
    ['{"targets":{"primary":{}},"model_header":"x-llm-route"}', "model_header"],
    ['{"targets":{"Primary!":{}}}', "targets.Primary!"],
    ['{"targets":{"primary":{"guard":{}}}}', "targets.primary.guard"],
    ['{"targets":{"primary":{},"canary":{"guard":{"max_error_rate":2}}}}', "targets.canary.guard.max_error_rate"],
    ['{"targets":{"primary":{},"canary":{}},"rules":[{"name":"r","weights":{"primary":50,"canary":40}}]}', "rules[0].weights"],
    ['{"targets":{"primary":{}},"rules":[{"name":"r","target":"nope"}]}', "rules[0].target"],
    ['{"targets":{"primary":{}},"rules":[{"name":"r"}]}', "rules[0]"],
    ['{"targets":{"primary":{}},"record":{"preview_chars":100000}}', "record.preview_chars"],
  ],
};

const FILTERS = Object.keys(INVALID) as Filter[];
const PLACEHOLDER: Record<Filter, keyof typeof MESH_VARS> = {
  admission: "ADMISSION_CONFIG",
  throttle: "THROTTLE_CONFIG",
  metrics: "METRICS_CONFIG",
  router: "ROUTER_CONFIG",
};
/** The one configuration per filter that the Envoy tests hand over. */
const SAMPLE: Record<Filter, [string, string]> = {
  admission: INVALID.admission[9],
  throttle: INVALID.throttle[4],
  metrics: INVALID.metrics[4],
  router: INVALID.router[8],
};

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("invalid configurations are refused, naming the field", () => {
  let parsers: ConfigCheckers;
  before(async () => (parsers = await loadConfigCheckers()));

  for (const filter of FILTERS) {
    test(`llm-${filter}: ${INVALID[filter].length} invalid configurations`, () => {
      for (const [text, field] of INVALID[filter]) {
        const verdict = parsers.check(filter, text);
        assert.ok(!verdict.ok, `llm-${filter} accepted ${text}`);
        assert.ok(verdict.error.startsWith(`${field}: `) && verdict.error.length > field.length + 3, `llm-${filter} on ${text}: "${verdict.error}" does not start with "${field}: <reason>"`);
      }
      // The configuration the fuzz run uses is a valid one, so the refusals above are the field's doing.
      assert.deepEqual(parsers.check(filter, JSON.stringify(MESH_VARS[PLACEHOLDER[filter]])), { ok: true });
    });
  }

  for (const filter of FILTERS) {
    test(`llm-${filter}: Envoy does not start with an invalid configuration and says why`, { timeout: 30_000 }, async () => {
      const [text, field] = SAMPLE[filter];
      let failure = "";
      try {
        const envoy = await startEnvoy({ scenario: "fuzz", vars: { ...MESH_VARS, UPSTREAM_PORT: 9, [PLACEHOLDER[filter]]: text }, concurrency: 1 });
        await envoy.stop();
      } catch (err) {
        failure = (err as Error).message;
      }
      assert.match(failure, new RegExp(`llm-${filter}\\[\\d+\\]: invalid configuration, refusing to start: ${escape(field)}: `));
      const scratch = /log (\S+)\/envoy\.log/.exec(failure)?.[1];
      if (scratch && !process.env.KEEP_TMP) rmSync(scratch, { recursive: true, force: true });
    });
  }
});

describe("over filesystem xDS an invalid configuration is rejected and the old one keeps serving", () => {
  let mock: MockLlm;
  before(async () => (mock = await startMockLlm({ name: "primary" })));
  after(() => mock.close());

  test("one filter at a time, then a valid update that takes effect", { timeout: 120_000 }, async () => {
    const xdsDir = mkdtempSync(join(repoDir, ".tmp", "config-xds-"));
    const first = await renderScenario("fuzz", { ...MESH_VARS, UPSTREAM_PORT: mock.port });
    rmSync(first.tmpDir, { recursive: true, force: true });
    const listenPort = first.ports.LISTEN_PORT;
    const file = join(xdsDir, "listeners.yaml");
    const publish = async (vars: Record<string, unknown>) => {
      const rendered = await renderScenario("fuzz", { ...MESH_VARS, ...vars, UPSTREAM_PORT: mock.port, LISTEN_PORT: listenPort });
      rmSync(rendered.tmpDir, { recursive: true, force: true });
      const listener = parse(rendered.yaml).static_resources.listeners[0];
      delete listener.filter_chains[0].filters[0].typed_config.access_log;
      const staged = join(xdsDir, ".listeners.yaml.next");
      writeFileSync(staged, stringify({ resources: [{ "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", ...listener }] }));
      // A rename is atomic: Envoy never reads a half-written file.
      renameSync(staged, file);
    };
    await publish({});
    const envoy = await startEnvoy({ scenario: "faults-config-xds", vars: { UPSTREAM_PORT: mock.port, XDS_DIR: xdsDir }, concurrency: 2 });
    const waitFor = (name: string, value: number) => waitForStatAtLeast(envoy, name, value, 10_000);
    const chat = async (model: string) => {
      const connection = new Connection(listenPort);
      try {
        const body = simpleChat(model);
        const outcome = await connection.request([Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-tenant: a\r\ncontent-length: ${body.length}\r\n\r\n${body}`)]);
        assert.ok("response" in outcome);
        return outcome.response.status;
      } finally {
        connection.destroy();
      }
    };
    try {
      await waitFor("listener_manager.lds.update_success", 1);
      // The serving configuration: gpt-4o is allowed, gpt-5 is not.
      assert.equal(await chat("gpt-4o"), 200);
      assert.equal(await chat("gpt-5"), 400);

      let rejected = 0;
      for (const filter of FILTERS) {
        const [text, field] = SAMPLE[filter];
        await publish({ [PLACEHOLDER[filter]]: text });
        await waitFor("listener_manager.lds.update_rejected", ++rejected);
        assert.match(envoy.log(), new RegExp(`llm-${filter}\\[\\d+\\]: invalid configuration, refusing to start: ${escape(field)}: `));
        assert.equal(await chat("gpt-4o"), 200, `after the rejected llm-${filter} update the old chain serves`);
        assert.equal(await chat("gpt-5"), 400, `after the rejected llm-${filter} update the old limits hold`);
      }
      assert.equal(await stat(envoy, "listener_manager.lds.update_success"), 1, "no invalid update was taken");

      // A valid update is taken: the watch works, so the rejections above were the configs' doing.
      await publish({ ADMISSION_CONFIG: { ...MESH_VARS.ADMISSION_CONFIG, models: { ...MESH_VARS.ADMISSION_CONFIG.models, "gpt-5": {} } } });
      await waitFor("listener_manager.lds.update_success", 2);
      const deadline = Date.now() + 10_000;
      while ((await chat("gpt-5")) !== 200) {
        assert.ok(Date.now() < deadline, "the valid update took effect");
        await new Promise((done) => setTimeout(done, 50));
      }
    } finally {
      await envoy.stop();
      if (!process.env.KEEP_TMP) {
        rmSync(xdsDir, { recursive: true, force: true });
        rmSync(envoy.tmpDir, { recursive: true, force: true });
      }
    }
  });
});
