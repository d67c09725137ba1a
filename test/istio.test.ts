// The Istio path as a user runs it: k8s/ rendered with the images pushed to a registry and pinned by
// their real digests, read by Istio's own istiod, served to Istio's own istio-agent, which fetches
// the modules and runs the real Envoy as the LLM gateway. Traffic goes through that gateway to mock
// model servers behind the ServiceEntries that stand for the Kubernetes Services, and the prod
// overlay's global budget is counted by the real rate limit service (with Redis) behind its Service.
//
// What it does not cover: Kubernetes itself (istiod reads files, and Services become
// ServiceEntries), Istio's own Envoy extensions (metadata exchange, Istio's stats filter: the PyPI
// Envoy is upstream Envoy), and sidecar-to-sidecar mTLS (the model servers here have no sidecar, so
// the DestinationRule's ISTIO_MUTUAL becomes DISABLE).
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { asOneModule } from "../tooling/one-module-manifests.ts";
import { startLocalRegistry, type LocalRegistry } from "../tooling/local-registry.ts";
import { packageFilters } from "../tooling/oci/package.ts";
import { publish } from "../tooling/oci/publish.ts";
import { repoDir } from "../tooling/envoy-bin.ts";
import { type Endpoint, type GatewayAgent, type Istiod, istioConfigOf, startGatewayAgent, startIstiod, writeIstioConfig } from "../tooling/istio.ts";
import { type JaegerHandle, startJaeger } from "../tooling/jaeger.ts";
import { k8sDir, type Manifest, parseYamlDocuments, render, setCanaryWeights } from "../tooling/manifests.ts";
import { type MockLlm, startMockLlm } from "../tooling/mock-llm.ts";
import { type PodNetwork, startPodNetwork } from "../tooling/pod-network.ts";
import { type RateLimitService, type Redis, startRateLimitService, startRedis } from "../tooling/ratelimit.ts";

const NAMESPACE = "llm-serving";
const TAG = "istio-test";
const PLACEHOLDER = "0".repeat(64);
/** The model servers, by the `version` label the DestinationRule's subsets select. */
const MODEL_VERSIONS = { v1: "primary", v2: "canary", candidate: "shadow", small: "fallback" } as const;

mkdirSync(join(repoDir, ".tmp"), { recursive: true });
const scratch = mkdtempSync(join(repoDir, ".tmp", "istio-"));

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: any;
}

describe("the Istio path, under Istio's own istiod and istio-agent", () => {
  let pod: PodNetwork;
  let registry: LocalRegistry;
  let mirror: LocalRegistry;
  let istiod: Istiod;
  /** The tracing backend the mesh config's provider points at (k8s/istio/tracing-provider.yaml). */
  let jaeger: JaegerHandle;
  const tracingProvider = parseYamlDocuments(readFileSync(join(k8sDir, "istio", "tracing-provider.yaml"), "utf8"), "tracing-provider.yaml")[0].spec.meshConfig;
  let gateway: GatewayAgent;
  const models: Record<string, MockLlm> = {};
  const digests: Record<string, string> = {};
  // What the prod overlay's global budgets are counted by: the Service `ratelimit` stands for it.
  let redis: Redis;
  let rateLimit: RateLimitService;
  const rateLimitDomain = render(join(k8sDir, "overlays", "prod")).find((d) => d.kind === "WasmPlugin" && d.metadata.name === "llm-throttle")!.spec.pluginConfig.rate_limit_service.domain;
  let gatewayPort = 0;
  let host = "";

  before(async () => {
    pod = await startPodNetwork();
    // Pushed to on loopback; the pod pulls from a read-only instance on the same storage at the
    // pod network's host address, as a cluster pulls from a registry it can reach.
    const storageDir = join(scratch, "registry");
    registry = await startLocalRegistry({ storageDir });
    mirror = await startLocalRegistry({ storageDir, readOnly: true, address: pod.hostAddress });
    const ociDir = join(scratch, "oci");
    packageFilters({ outDir: ociDir });
    for (const image of await publish({ target: `${registry.host}/llm-mesh:${TAG}`, ociDir, log: () => {} })) {
      if (image.kind === "wasm") digests[image.filter] = image.digest.replace(/^sha256:/, "");
    }
    for (const [version, name] of Object.entries(MODEL_VERSIONS)) models[version] = await startMockLlm({ name, host: pod.hostAddress });
    redis = await startRedis();
    rateLimit = await startRateLimitService({ redis, domain: rateLimitDomain, env: { GRPC_HOST: pod.hostAddress } });
    const istiodDir = join(scratch, "istiod");
    mkdirSync(istiodDir, { recursive: true });
    jaeger = await startJaeger({ otlpAddress: pod.hostAddress });
    istiod = await startIstiod({ hostAddress: pod.hostAddress, configDir: join(istiodDir, "config"), workDir: istiodDir, meshConfig: tracingProvider });
  });

  after(async () => {
    await gateway?.stop();
    await istiod?.stop();
    await jaeger?.stop();
    await Promise.all(Object.values(models).map((m) => m.close()));
    await rateLimit?.stop();
    await redis?.stop();
    await mirror?.stop();
    await registry?.stop();
    await pod?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  /** A copy of k8s/ with the images pinned as docs/istio.md's "Applying it" says, and any further edits. */
  function pinnedK8s(options: { placeholder?: boolean } = {}): string {
    const dir = mkdtempSync(join(scratch, "k8s-"));
    cpSync(k8sDir, dir, { recursive: true });
    for (const filter of ["admission", "throttle", "metrics", "router"]) {
      const file = join(dir, "base", `llm-${filter}.yaml`);
      const text = readFileSync(file, "utf8")
        .replace(/url: oci:\/\/\S+/, `url: oci://${mirror.host}/llm-mesh/${filter}:${TAG}`)
        .replace(/sha256: "0{64}"/, `sha256: "${options.placeholder ? PLACEHOLDER : digests[filter]}"`);
      writeFileSync(file, text);
    }
    return dir;
  }

  /** What `kubectl apply` of the overlay would make istiod see. */
  function apply(k8s: string, overlay: string, options: { oneModule?: boolean } = {}): Manifest[] {
    let docs = render(join(k8s, "overlays", overlay));
    if (options.oneModule) docs = asOneModule(docs, { sha256: digests.mesh });
    const endpoints: Record<string, Endpoint[]> = {
      "llm-model": Object.entries(models).map(([version, mock]) => ({ address: pod.hostAddress, port: mock.port, labels: { app: "llm-model", version } })),
      "llm-gateway": [{ address: pod.podAddress, port: 8080, labels: { istio: "llm-gateway" } }],
      ratelimit: [{ address: pod.hostAddress, port: rateLimit.grpcPort, labels: { app: "ratelimit" } }],
    };
    const config = istioConfigOf(docs, endpoints).map((doc) => {
      if (doc.kind !== "DestinationRule") return doc;
      const copy = structuredClone(doc);
      copy.spec.trafficPolicy.tls = { mode: "DISABLE" };
      return copy;
    });
    // The collector the provider names, as the cluster's Service would make it: here, the test's Jaeger.
    const otel = tracingProvider.extensionProviders[0].opentelemetry;
    config.push({
      apiVersion: "networking.istio.io/v1",
      kind: "ServiceEntry",
      metadata: { name: "otel-collector", namespace: "observability" },
      spec: {
        hosts: [otel.service],
        location: "MESH_EXTERNAL",
        resolution: "STATIC",
        ports: [{ number: otel.port, name: "grpc-otlp", protocol: "GRPC", targetPort: jaeger.otlpPort }],
        endpoints: [{ address: pod.hostAddress }],
      },
    });
    writeIstioConfig(istiod.configDir, config);
    host = docs.find((d) => d.kind === "Gateway")!.spec.servers[0].hosts[0];
    return docs;
  }

  async function startGateway(docs: Manifest[]): Promise<void> {
    const deployment = docs.find((d) => d.kind === "Deployment" && d.metadata.name === "llm-gateway")!;
    const template = deployment.spec.template;
    gateway = await startGatewayAgent({
      pod,
      xdsAddress: istiod.xdsAddress,
      namespace: NAMESPACE,
      serviceAccount: template.spec.serviceAccountName,
      labels: template.metadata.labels,
      annotations: template.metadata.annotations,
      insecureRegistries: [mirror.host],
      workDir: mkdtempSync(join(scratch, "gateway-")),
    });
    gatewayPort = template.spec.containers[0].ports[0].containerPort;
  }

  /** A request to the gateway as a client outside the mesh sends it; never waits longer than `timeoutMs`. */
  function send(path: string, body: unknown, headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request({
        host: pod.podAddress, port: gatewayPort, path, method: payload ? "POST" : "GET",
        headers: { host, ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}), ...headers },
        timeout: timeoutMs,
      }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c));
        res.on("end", () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = text;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
        });
      });
      req.on("timeout", () => req.destroy(new Error(`no answer to ${path} within ${timeoutMs} ms: the request hung`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  const chat = (model: string, content: string, extra: Record<string, unknown> = {}) => ({ model, messages: [{ role: "user", content }], ...extra });
  let keys = 0;
  /** A fresh API key: each tenant has its own budget, so tests that are not about throttling stay under it. */
  const apiKey = () => `Bearer sk-istio-test-${++keys}`;

  /** Polls until the gateway answers as `ok` says, for config that istiod pushes asynchronously. */
  async function eventually(what: string, ok: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        if (await ok()) return;
      } catch (err) {
        last = err;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.fail(`${what}: not within ${timeoutMs / 1000} s${last ? ` (${(last as Error).message})` : ""}\n${gateway?.log().slice(-3000) ?? ""}`);
  }

  test("dev overlay: the gateway starts with the four plugins and the hold-headers filter in their place", async () => {
    const docs = apply(pinnedK8s(), "dev");
    await startGateway(docs);
    await eventually("an admitted chat request answered", async () => (await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "hello"), { authorization: apiKey() })).status === 200);
    const dump = JSON.parse(await gateway.admin("/config_dump"));
    const ecds = dump.configs.filter((c: any) => c["@type"].endsWith("EcdsConfigDump")).flatMap((c: any) => c.ecds_filters ?? []);
    const filters = Object.fromEntries(ecds.map((f: any) => [f.ecds_filter.name, f.ecds_filter.typed_config]));
    const hold = filters["llm-serving.llm-admission-hold-headers"];
    assert.ok(hold, `no hold-headers extension config among ${Object.keys(filters).join(", ")}`);
    assert.equal(hold.config.allow_on_headers_stop_iteration, true);
    const listeners = JSON.stringify(dump.configs.find((c: any) => c["@type"].endsWith("ListenersConfigDump")));
    assert.match(listeners, /llm-serving\.llm-admission-hold-headers/, "the gateway's chain serves admission from the hold-headers extension");
    assert.doesNotMatch(listeners, /wasmplugin\/llm-serving\.llm-admission"|trafficextension\/llm-serving\.llm-admission~/, "the WasmPlugin's own admission filter was replaced");
  });

  test("dev: admitted 200 with admission's facts upstream, oversize 413, unknown model 400, none waiting", async () => {
    models.v1.reset();
    models.v2.reset();
    const ok = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "hello there"), { authorization: apiKey(), "x-llm-test-account": "qa", "x-llm-route": "primary" });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    const seen = models.v1.requests.at(-1)!;
    // Only a held request carries admission's facts: the headers left after the body was read.
    assert.equal(seen.headers["x-llm-model"], "llama-3.1-8b-instruct");
    assert.ok(Number(seen.headers["x-llm-prompt-tokens"]) > 0);
    const oversize = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "word ".repeat(20_000)), { authorization: apiKey() });
    assert.equal(oversize.status, 413);
    assert.equal(oversize.json.error.code, "context_length_exceeded");
    const unknown = await send("/v1/chat/completions", chat("no-such-model", "hi"), { authorization: apiKey() });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.error.code, "model_not_found");
  });

  test("dev: a tenant over its budget gets 429 with Retry-After", async () => {
    const key = apiKey();
    const replies = await Promise.all(Array.from({ length: 6 }, () => send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "hi"), { authorization: key })));
    const throttled = replies.filter((r) => r.status === 429);
    assert.ok(throttled.length > 0, `statuses ${replies.map((r) => r.status).join(",")}`);
    assert.ok(Number(throttled[0].headers["retry-after"]) >= 1);
    assert.equal(throttled[0].json.error.code, "rate_limit_exceeded");
  });

  test("dev: the gateway's spans reach the mesh config's provider with llm-mesh's attributes, from the Telemetry's formatter tags", async () => {
    models.v1.reset();
    const traceId = randomBytes(16).toString("hex");
    const traceparent = `00-${traceId}-${randomBytes(8).toString("hex")}-01`;
    const ok = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "trace me", { max_tokens: 8 }), { authorization: apiKey(), "x-llm-test-account": "qa", "x-llm-route": "primary", traceparent });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    assert.equal(String(models.v1.requests.at(-1)!.headers.traceparent).split("-")[1], traceId, "the client's trace reaches the model server");
    // Envoy sends a batch every 5 s or 5 spans. Istio's gateway also makes a client span per
    // upstream request, ended before the answer is through: it has the request's tags only.
    const isServer = (s: { attributes: Record<string, string> }) => s.attributes["span.kind"] === "server";
    const spans = await jaeger.waitFor(() => jaeger.trace(traceId), (found) => found.some(isServer), 20_000);
    const span = spans.find(isServer)!;
    assert.equal(span.attributes["http.status_code"], "200");
    assert.equal(span.attributes["gen_ai.request.model"], "llama-3.1-8b-instruct");
    assert.equal(span.attributes["gen_ai.operation.name"], "chat");
    assert.equal(span.attributes["gen_ai.usage.output_tokens"], String(ok.json.usage.completion_tokens));
    assert.equal(span.attributes["gen_ai.response.finish_reasons"], "length");
    assert.equal(span.attributes["llm_mesh.admission"], "admitted");
    assert.equal(span.attributes["llm_mesh.throttle"], "admitted");
    assert.ok(!JSON.stringify(spans).includes("trace me"), "no prompt text on a span");
  });

  test("dev: a test account's canary request reaches the canary subset, and primary traffic is mirrored to the shadow", async () => {
    models.candidate.reset();
    const canary = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "beta"), { authorization: apiKey(), "x-llm-test-account": "beta", "x-llm-route": "canary" });
    assert.equal(canary.status, 200);
    assert.equal(canary.headers["x-mock-served-by"], "canary");
    const primary = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "mirror me"), { authorization: apiKey(), "x-llm-test-account": "qa", "x-llm-route": "primary" });
    assert.equal(primary.headers["x-mock-served-by"], "primary");
    await eventually("the mirrored copy at the shadow", async () => models.candidate.requests.some((r) => (r.json as any)?.messages?.[0]?.content === "mirror me"), 10_000);
    // Istio keeps the mirror's host as it is (its DISABLE_SHADOW_HOST_SUFFIX, on by default), and
    // the copy leaves after the gateway's filters: it reaches the shadow subset unchanged.
    const copy = models.candidate.requests.find((r) => (r.json as any)?.messages?.[0]?.content === "mirror me")!;
    assert.equal(copy.authority, host);
    assert.equal(copy.headers["x-llm-model"], "llama-3.1-8b-instruct");
  });

  test("dev: canary weights changed in the files move the traffic, with no failed request", async () => {
    const k8s = pinnedK8s();
    const failures: string[] = [];
    const servedBy: string[] = [];
    let running = true;
    // Ten tenants taking turns, each well under dev's 2 requests per second, so that every
    // failure would be the rollout's: the throttle shares its key slots among many new keys.
    const tenants = Array.from({ length: 10 }, apiKey);
    const traffic = (async () => {
      for (let i = 0; running; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const reply = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "steady"), { authorization: tenants[i % tenants.length] }).catch((err: Error) => ({ status: 0, headers: {}, json: err.message }) as Reply);
        if (reply.status !== 200) failures.push(`${reply.status} ${JSON.stringify(reply.json).slice(0, 200)}`);
        else servedBy.push(String(reply.headers["x-mock-served-by"]));
      }
    })();
    try {
      for (const [primary, canary] of [[0, 100], [100, 0]]) {
        setCanaryWeights(k8s, "dev", primary, canary);
        apply(k8s, "dev");
        const target = canary === 100 ? "canary" : "primary";
        await eventually(`all traffic on ${target} after weights ${primary}/${canary}`, async () => {
          const from = servedBy.length;
          await new Promise((r) => setTimeout(r, 1000));
          const recent = servedBy.slice(from);
          return recent.length >= 5 && recent.every((s) => s === target);
        });
      }
    } finally {
      running = false;
      await traffic;
    }
    assert.deepEqual(failures, []);
  });

  test("prod overlay: the same gateway follows, and admits, refuses and throttles", async () => {
    apply(pinnedK8s(), "prod");
    await eventually("prod's host served", async () => (await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "prod"), { authorization: apiKey() })).status === 200);
    assert.equal((await send("/v1/chat/completions", chat("no-such-model", "hi"), { authorization: apiKey() })).status, 400);
    assert.equal((await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "word ".repeat(20_000)), { authorization: apiKey() })).status, 413);
  });

  test("prod: the per-API-key budget is counted by the rate limit service, reached through Istio's cluster for its Service", async () => {
    // The throttle names outbound|8081||ratelimit.llm-serving.svc.cluster.local: istiod must have
    // made that cluster, HTTP/2 for the port named grpc-..., for the call to reach the service.
    const key = apiKey();
    const minute = () => Math.floor(Date.now() / 60_000) * 60;
    let counted: string[] = [];
    await eventually("a reservation counted in Redis", async () => {
      const window = minute();
      assert.equal((await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "counted once for the fleet"), { authorization: key })).status, 200);
      counted = await redis.keys(`${rateLimitDomain}_rule_per-api-key_key_*_limit_tokens_${window}`);
      return counted.length > 0;
    }, 20_000);
    assert.ok(((await redis.counter(counted[0])) ?? 0) > 0, `${counted[0]} holds the reservation`);
  });

  test("one module: the dev overlay as one llm-mesh WasmPlugin admits, refuses, throttles and routes", async () => {
    apply(pinnedK8s(), "dev", { oneModule: true });
    await eventually("the one module serving", async () => {
      const dump = await gateway.admin("/config_dump?resource=ecds_filters");
      return dump.includes("llm-serving.llm-mesh-hold-headers") && !dump.includes("llm-serving.llm-admission-hold-headers");
    });
    models.v1.reset();
    const ok = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "one module"), { authorization: apiKey(), "x-llm-test-account": "qa", "x-llm-route": "primary" });
    assert.equal(ok.status, 200);
    assert.equal(models.v1.requests.at(-1)!.headers["x-llm-model"], "llama-3.1-8b-instruct", "held until admission read the body");
    assert.equal((await send("/v1/chat/completions", chat("no-such-model", "hi"), { authorization: apiKey() })).status, 400);
    assert.equal((await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "word ".repeat(20_000)), { authorization: apiKey() })).status, 413);
    const key = apiKey();
    const burst = await Promise.all(Array.from({ length: 6 }, () => send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "hi"), { authorization: key })));
    assert.ok(burst.some((r) => r.status === 429), `statuses ${burst.map((r) => r.status).join(",")}`);
    const canary = await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "beta"), { authorization: apiKey(), "x-llm-test-account": "beta", "x-llm-route": "canary" });
    assert.equal(canary.headers["x-mock-served-by"], "canary");
  });

  test("an image left at the placeholder digest is refused: the gateway denies rather than runs without it", async () => {
    apply(pinnedK8s({ placeholder: true }), "dev");
    await eventually("requests denied", async () => (await send("/v1/chat/completions", chat("llama-3.1-8b-instruct", "unpinned"), { authorization: apiKey() })).status === 403);
    assert.match(gateway.log(), /sha256|checksum/i);
  });
});
