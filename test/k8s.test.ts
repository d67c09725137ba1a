// The Istio deployment under k8s/: every kustomization (base and overlays) renders, every object in
// it passes the schema the cluster will hold it to (Istio's CRDs from @kubernetes-models/istio,
// Kubernetes' own from kubernetes-models), and the wiring between the objects is what docs/istio.md
// promises: filter order, pinned images, the hold-headers EnvoyFilter in step with its WasmPlugin,
// canary, mirror, circuit breaking, mTLS and the gateway-only policy, and the rate limit service
// that global throttle rules name (docs/global-budgets.md). The canary is rolled forward and back
// by editing a weight, the EnvoyFilter's plugin is loaded by the real Envoy, and the rate limit
// service's Deployment runs as the real service.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse, stringify } from "yaml";
import { asOneModule } from "../tooling/one-module-manifests.ts";
import { envoyBinary, repoDir } from "../tooling/envoy-bin.ts";
import { componentDirs, FILTERS, k8sDir, kustomizationDirs, type Manifest, parseYamlDocuments, render, setCanaryWeights } from "../tooling/manifests.ts";
import { STAGES } from "../tooling/one-module.ts";
import { type RateLimitService, type Redis, shouldRateLimit, startRateLimitService, startRedis } from "../tooling/ratelimit.ts";

const scratch = mkdtempSync(join(repoDir, ".tmp", "k8s-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const label = (dir: string) => relative(repoDir, dir);
const istioInstallDir = join(k8sDir, "istio");
const renderings = new Map(kustomizationDirs().map((dir) => [label(dir), render(dir)]));

const describeDoc = (doc: Manifest) => `${doc.kind} ${doc.metadata?.name}`;
function one(docs: Manifest[], kind: string, name?: string): Manifest {
  const found = docs.filter((d) => d.kind === kind && (name === undefined || d.metadata.name === name));
  assert.equal(found.length, 1, `expected one ${kind}${name ? ` ${name}` : ""}, found ${found.length}`);
  return found[0];
}

/** The module that carries the model of an apiVersion/kind: Istio's CRDs or Kubernetes' API. */
function modelModule(apiVersion: string, kind: string): string {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group.endsWith(".istio.io")) return `@kubernetes-models/istio/${group}/${version}/${kind}`;
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

/** Why the cluster would refuse an object by its published schema, or null when it would not. */
async function schemaProblem(doc: Manifest): Promise<string | null> {
  const module = await import(modelModule(doc.apiVersion, doc.kind)).catch(() => null);
  const Model = module?.[doc.kind];
  if (!Model) return `${describeDoc(doc)}: no published schema for ${doc.apiVersion} ${doc.kind}`;
  try {
    new Model(doc).validate();
    return null;
  } catch (err) {
    return `${describeDoc(doc)}: ${(err as Error).message}`;
  }
}

/**
 * Unknown fields, which the API server refuses (kubectl applies with strict field validation) but
 * the generated validators let through: the models' TypeScript types are generated from the same
 * schemas, and TypeScript's excess-property check names every field a type does not have.
 * (Inside a oneOf, e.g. a VirtualService route, the types are unions and the check is weaker.)
 */
function unknownFields(docs: { where: string; doc: Manifest }[]): string[] {
  const dir = mkdtempSync(join(scratch, "types-"));
  const lines: string[] = [];
  const owners: string[] = [];
  docs.forEach(({ doc }, i) => {
    lines.push(`import type { I${doc.kind} as T${i} } from "${modelModule(doc.apiVersion, doc.kind)}";`);
    owners.push("");
  });
  docs.forEach(({ where, doc }, i) => {
    lines.push(`export const d${i}: T${i} = ${JSON.stringify(doc)};`);
    owners.push(where);
  });
  writeFileSync(join(dir, "check.ts"), lines.join("\n") + "\n");
  const compilerOptions = { strict: true, noEmit: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022", skipLibCheck: true, types: [] };
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions, files: ["check.ts"] }));
  const tsc = spawnSync(join(repoDir, "node_modules", ".bin", "tsc"), ["-p", dir], { encoding: "utf8" });
  const problems: string[] = [];
  for (const line of tsc.stdout.split("\n")) {
    const m = /^.*check\.ts\((\d+),\d+\): error (TS\d+: .*)$/.exec(line);
    if (m) problems.push(`${owners[Number(m[1]) - 1] || "import"}: ${m[2].slice(0, 300)}`);
  }
  if (tsc.status !== 0 && problems.length === 0) problems.push(`tsc failed: ${tsc.stdout}${tsc.stderr}`);
  return problems;
}

describe("k8s manifests", () => {
  test("the base and the dev and prod overlays render", () => {
    assert.deepEqual([...renderings.keys()], ["k8s/base", "k8s/overlays/dev", "k8s/overlays/prod"]);
  });

  test("every YAML file under k8s/ is part of a kustomization, so none escapes these checks", () => {
    const used = new Set<string>();
    for (const dir of [...kustomizationDirs(), ...componentDirs()]) {
      const kustomization = parse(readFileSync(join(dir, "kustomization.yaml"), "utf8"));
      used.add(join(dir, "kustomization.yaml"));
      const files = [...(kustomization.resources ?? []), ...(kustomization.components ?? []), ...(kustomization.patches ?? []).map((p: { path?: string }) => p.path)];
      for (const file of files.filter(Boolean)) used.add(resolve(dir, file));
    }
    const unused: string[] = [];
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        // Dashboards are JSON for Grafana, checked by the metrics tests; istio/ is set when Istio is
        // installed, not applied with the rest (checked under "tracing" below).
        if (entry.isDirectory()) {
          if (path !== join(k8sDir, "dashboards") && path !== istioInstallDir) walk(path);
        } else if (/\.ya?ml$/.test(entry.name)) {
          parseYamlDocuments(readFileSync(path, "utf8"), label(path));
          if (!used.has(path)) unused.push(label(path));
        }
      }
    };
    walk(k8sDir);
    assert.deepEqual(unused, []);
  });

  for (const [where, docs] of renderings) {
    test(`${where}: every object passes its Istio or Kubernetes schema`, async () => {
      const failures = (await Promise.all(docs.map(schemaProblem))).filter(Boolean);
      assert.deepEqual(failures, []);
    });
  }

  test("the schema check refuses a value Istio's CRD does not allow", async () => {
    const plugin = structuredClone(one(renderings.get("k8s/base")!, "WasmPlugin", "llm-admission"));
    plugin.spec.failStrategy = "FAIL_SOMETIMES";
    assert.match((await schemaProblem(plugin)) ?? "", /failStrategy must be equal to one of the allowed values/);
  });

  test("no object has a field its schema does not define", () => {
    const docs = [...renderings].flatMap(([where, list]) => list.map((doc) => ({ where: `${where} ${describeDoc(doc)}`, doc })));
    assert.deepEqual(unknownFields(docs), []);
  });

  test("the unknown-field check catches a misspelt field", () => {
    const base = renderings.get("k8s/base")!;
    const plugin = structuredClone(one(base, "WasmPlugin", "llm-admission"));
    plugin.spec.failStrategyy = "FAIL_OPEN";
    const problems = unknownFields([{ where: "misspelt", doc: plugin }]);
    assert.equal(problems.length, 1);
    assert.match(problems[0], /^misspelt: TS\d+: .*failStrategyy/);
  });
});

/** Istio's order of WasmPlugins in a chain: by phase, then by priority (higher first). */
const PHASE_RANK: Record<string, number> = { AUTHN: 0, AUTHZ: 1, STATS: 2 };
const phaseRank = (plugin: Manifest) => PHASE_RANK[plugin.spec.phase ?? ""] ?? 3;

const FAIL_POLICY: Record<string, string> = { FAIL_CLOSE: "FAIL_CLOSED", FAIL_OPEN: "FAIL_OPEN", FAIL_RELOAD: "FAIL_RELOAD" };

for (const [where, docs] of renderings) {
  describe(`${where}: the filters`, () => {
    const plugins = docs.filter((d) => d.kind === "WasmPlugin");
    const gateway = one(docs, "Deployment", "llm-gateway");
    const podLabels: Record<string, string> = gateway.spec.template.metadata.labels;

    test("one WasmPlugin per filter, each pinned to a digest of the image `npm run publish` pushes", () => {
      assert.deepEqual(plugins.map((p) => p.spec.pluginName).sort(), FILTERS.map((f) => `llm-${f}`).sort());
      for (const plugin of plugins) {
        const filter = plugin.spec.pluginName.slice(4);
        assert.match(plugin.spec.url, new RegExp(`^oci://[^/]+/.+/${filter}:[\\w.-]+$`), `${plugin.metadata.name} url`);
        assert.match(plugin.spec.sha256, /^[a-f0-9]{64}$/, `${plugin.metadata.name} sha256`);
        assert.ok(plugin.spec.failStrategy, `${plugin.metadata.name} states its failStrategy`);
      }
    });

    test("Istio places them admission, throttle, metrics, router: the order the filters are written for", () => {
      const order = [...plugins].sort((a, b) => phaseRank(a) - phaseRank(b) || (b.spec.priority ?? 0) - (a.spec.priority ?? 0));
      assert.deepEqual(order.map((p) => p.spec.pluginName), ["llm-admission", "llm-throttle", "llm-metrics", "llm-router"]);
      const phases = Object.fromEntries(plugins.map((p) => [p.spec.pluginName, p.spec.phase]));
      assert.deepEqual(phases, { "llm-admission": "AUTHN", "llm-throttle": "AUTHZ", "llm-metrics": "STATS", "llm-router": undefined });
    });

    test("only llm-admission fails closed; the others fail open", () => {
      const strategies = Object.fromEntries(plugins.map((p) => [p.spec.pluginName, p.spec.failStrategy]));
      assert.deepEqual(strategies, { "llm-admission": "FAIL_RELOAD", "llm-throttle": "FAIL_RELOAD", "llm-metrics": "FAIL_OPEN", "llm-router": "FAIL_RELOAD" });
    });

    test("every plugin selects the LLM gateway's pods, in their namespace", () => {
      for (const plugin of plugins) {
        assert.equal(plugin.metadata.namespace, gateway.metadata.namespace);
        for (const [key, value] of Object.entries(plugin.spec.selector.matchLabels)) {
          assert.equal(podLabels[key], value, `${plugin.metadata.name} selects ${key}=${value}`);
        }
      }
    });

    test("the hold-headers EnvoyFilter serves llm-admission with allow_on_headers_stop_iteration, in step with its WasmPlugin", () => {
      const admission = one(plugins, "WasmPlugin", "llm-admission");
      const filter = one(docs, "EnvoyFilter", "llm-admission-hold-headers");
      const ecds = filter.spec.configPatches.find((p: any) => p.applyTo === "EXTENSION_CONFIG");
      const replaces = filter.spec.configPatches.filter((p: any) => p.applyTo === "HTTP_FILTER");
      assert.deepEqual(filter.spec.workloadSelector.labels, admission.spec.selector.matchLabels);
      // One replacement per name Istio gives a WasmPlugin's HTTP filter: 1.26-1.29, then master.
      assert.deepEqual(replaces.map((r: any) => r.match.listener.filterChain.filter.subFilter.name), [
        "extensions.istio.io/wasmplugin/llm-serving.llm-admission",
        "extensions.istio.io/trafficextension/llm-serving.llm-admission~istio-translated-wasmplugin",
      ]);
      assert.equal(ecds.patch.operation, "ADD");
      for (const replace of replaces) {
        assert.equal(replace.patch.operation, "REPLACE");
        assert.equal(replace.patch.value.name, ecds.patch.value.name, "the replaced filter takes its config from the added extension");
        // The plugin's type, and RBAC for the deny-all filter istio-agent serves when the image fails.
        assert.deepEqual(replace.patch.value.config_discovery.type_urls, [ecds.patch.value.typed_config["@type"], "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"]);
      }
      const config = ecds.patch.value.typed_config.config;
      assert.equal(config.allow_on_headers_stop_iteration, true);
      assert.equal(config.root_id, admission.spec.pluginName);
      assert.equal(config.failure_policy, FAIL_POLICY[admission.spec.failStrategy]);
      assert.equal(config.vm_config.code.remote.http_uri.uri, admission.spec.url);
      assert.equal(config.vm_config.code.remote.sha256, admission.spec.sha256);
      assert.equal(config.configuration["@type"], "type.googleapis.com/google.protobuf.StringValue");
      assert.deepEqual(JSON.parse(config.configuration.value), admission.spec.pluginConfig);
      assert.equal(admission.spec.pluginConfig.hold_headers, true, "hold_headers is what the EnvoyFilter is for");
    });

    test("the gateway pods extract every filter's metric labels and use the histogram buckets of the demo", () => {
      const annotations = gateway.spec.template.metadata.annotations;
      // envoy/demo.yaml runs all four filters, so its extractors are every label they write.
      const stats = parse(readFileSync(join(repoDir, "envoy", "demo.yaml"), "utf8").replace(/\{\{[A-Z_]+\}\}/g, "0")).stats_config;
      assert.deepEqual(annotations["sidecar.istio.io/extraStatTags"].split(","), stats.stats_tags.map((t: { tag_name: string }) => t.tag_name));
      // Istio's extractor for a tag is the regex envoy/metrics.yaml spells out for it.
      for (const tag of stats.stats_tags) assert.equal(tag.regex, `(${tag.tag_name}=\\.=(.*?);\\.;)`);
      const buckets = Object.fromEntries(stats.histogram_bucket_settings.map((s: any) => [s.match.prefix, s.buckets]));
      assert.deepEqual(JSON.parse(annotations["sidecar.istio.io/statsHistogramBuckets"]), buckets);
    });
  });

  test(`${where}: kubectl apply creates the policies first, subsets before routes, the EnvoyFilter before the WasmPlugins`, () => {
    const first = (kind: string) => docs.findIndex((d) => d.kind === kind);
    const last = (kind: string) => docs.findLastIndex((d) => d.kind === kind);
    for (const policy of ["PeerAuthentication", "AuthorizationPolicy"]) {
      assert.ok(last(policy) < first("Deployment") && last(policy) < first("Gateway"), `${policy} before the gateway`);
    }
    if (first("ConfigMap") >= 0) assert.ok(last("ConfigMap") < first("Deployment"), "a ConfigMap before the pods that mount it");
    assert.ok(last("DestinationRule") < first("VirtualService"));
    assert.ok(last("EnvoyFilter") < first("WasmPlugin"));
  });

  describe(`${where}: the mesh around them`, () => {
    const vs = one(docs, "VirtualService", "llm-model");
    const dr = one(docs, "DestinationRule", "llm-model");
    const service = one(docs, "Service", "llm-model");
    const gatewayDeployment = one(docs, "Deployment", "llm-gateway");
    const namespace = gatewayDeployment.metadata.namespace;
    const host = `llm-model.${namespace}.svc.cluster.local`;
    const route = (name: string) => vs.spec.http.find((r: any) => r.name === name);

    test("the VirtualService is bound to the LLM gateway, which serves its hosts", () => {
      const gw = one(docs, "Gateway", "llm-gateway");
      assert.deepEqual(vs.spec.gateways, [gw.metadata.name]);
      for (const h of vs.spec.hosts) assert.ok(gw.spec.servers.some((s: any) => s.hosts.includes(h)), `Gateway serves ${h}`);
      for (const [key, value] of Object.entries(gw.spec.selector)) assert.equal(gatewayDeployment.spec.template.metadata.labels[key], value);
    });

    test("x-llm-fallback and x-llm-route pick fallback, canary and primary; everything else gets the weighted split, with a mirror", () => {
      const byHeader = (name: string, header: string, value: string, subset: string) => {
        const r = route(name);
        assert.deepEqual(r.match, [{ headers: { [header]: { exact: value } } }]);
        assert.deepEqual(r.route.map((d: any) => d.destination), [{ host, subset }]);
      };
      byHeader("fallback", "x-llm-fallback", "true", "fallback");
      byHeader("canary", "x-llm-route", "canary", "canary");
      byHeader("primary", "x-llm-route", "primary", "primary");
      // First match wins: llm-router runs after llm-throttle and sets x-llm-route on every request it
      // decides, so a throttle redirect must be matched before any x-llm-route route.
      assert.equal(vs.spec.http[0].name, "fallback");
      const split = vs.spec.http.at(-1);
      assert.equal(split.name, "split");
      assert.equal(split.match, undefined, "the split catches every request the header routes did not");
      assert.deepEqual(split.route.map((d: any) => d.destination.subset), ["primary", "canary"]);
      assert.equal(split.route.reduce((sum: number, d: any) => sum + d.weight, 0), 100);
      for (const r of [split, route("primary")]) {
        assert.deepEqual(r.mirror, { host, subset: "shadow" });
        assert.ok(r.mirrorPercentage.value > 0 && r.mirrorPercentage.value <= 100);
      }
    });

    test("every llm-router target has a route, and its rollout follows the split's weights", () => {
      const router = one(docs, "WasmPlugin", "llm-router").spec.pluginConfig;
      for (const target of Object.keys(router.targets)) {
        assert.ok(vs.spec.http.some((r: any) => r.match?.some((m: any) => m.headers?.[router.route_header]?.exact === target)), `no route for ${router.route_header}: ${target}`);
      }
      const rollout = router.rules.find((r: any) => r.name === "rollout");
      const split = route("split");
      assert.deepEqual(rollout.weights, Object.fromEntries(split.route.map((d: any) => [d.destination.subset, d.weight])));
    });

    test("every fallback llm-throttle redirects to has a route", () => {
      const throttle = one(docs, "WasmPlugin", "llm-throttle");
      const redirects = (throttle.spec.pluginConfig.rules ?? []).filter((r: any) => r.action === "redirect").map((r: any) => r.redirect);
      assert.ok(redirects.length > 0);
      for (const { header, value } of redirects) {
        assert.ok(vs.spec.http.some((r: any) => r.match?.some((m: any) => m.headers?.[header]?.exact === value)), `no route for ${header}: ${value}`);
      }
    });

    test("every route has a timeout and retries only failures no generation can have started on", () => {
      for (const r of vs.spec.http) {
        assert.match(r.timeout, /^\d+s$/, `${r.name} timeout`);
        assert.ok(r.retries.attempts >= 1, `${r.name} retries`);
        for (const on of r.retries.retryOn.split(",")) assert.ok(["connect-failure", "refused-stream", "503"].includes(on), `${r.name} retries on ${on}`);
      }
    });

    test("the DestinationRule has every subset the routes use, a connection pool and outlier detection", () => {
      assert.equal(dr.spec.host, host);
      const used = new Set(vs.spec.http.flatMap((r: any) => [...r.route.map((d: any) => d.destination.subset), r.mirror?.subset].filter(Boolean)));
      assert.deepEqual([...used].sort(), dr.spec.subsets.map((s: any) => s.name).sort());
      for (const subset of dr.spec.subsets) assert.ok(subset.labels.version, `subset ${subset.name} picks pods by version`);
      const pool = dr.spec.trafficPolicy.connectionPool;
      assert.ok(pool.http.http2MaxRequests > 0 && pool.http.http1MaxPendingRequests > 0 && pool.tcp.maxConnections > 0);
      const outlier = dr.spec.trafficPolicy.outlierDetection;
      assert.ok(outlier.consecutive5xxErrors > 0 && outlier.maxEjectionPercent < 100);
    });

    test("mTLS is STRICT and only the gateway's service account may call the model servers", () => {
      assert.equal(one(docs, "PeerAuthentication").spec.mtls.mode, "STRICT");
      const policy = one(docs, "AuthorizationPolicy", "llm-model-gateway-only");
      assert.equal(policy.spec.action, "ALLOW");
      assert.deepEqual(policy.spec.selector.matchLabels, service.spec.selector);
      const principals = policy.spec.rules.flatMap((r: any) => r.from.flatMap((f: any) => f.source.principals));
      assert.deepEqual(principals, [`cluster.local/ns/${namespace}/sa/${gatewayDeployment.spec.template.spec.serviceAccountName}`]);
      assert.deepEqual(policy.spec.rules.flatMap((r: any) => r.to.flatMap((t: any) => t.operation.ports)), service.spec.ports.map((p: any) => String(p.targetPort)));
    });
  });
}

/** A container's environment as the pod gets it (every value in these manifests is literal). */
const envOf = (container: any): Record<string, string> => Object.fromEntries((container.env ?? []).map((e: any) => [e.name, e.value]));
/** The one Deployment whose pods a Service selects, in its namespace. */
function selectedDeployment(docs: Manifest[], service: Manifest): Manifest {
  const found = docs.filter((d) => d.kind === "Deployment" && d.metadata.namespace === service.metadata.namespace &&
    Object.entries(service.spec.selector).every(([k, v]) => d.spec.template.metadata.labels?.[k] === v));
  assert.equal(found.length, 1, `Service ${service.metadata.name} selects ${found.length} Deployments`);
  return found[0];
}
/** The Istio name of a Service port's cluster, as the throttle's rate_limit_service.cluster gives it. */
const ISTIO_CLUSTER = /^outbound\|(\d+)\|\|([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$/;
/** The commit scripts/setup-ratelimit.sh builds the tests' service from (a Go pseudo-version's last part). */
const testedServiceCommit = () => /^RATELIMIT_VERSION="v[\d.]+-[\d.]+-([0-9a-f]{12})"$/m.exec(readFileSync(join(repoDir, "scripts", "setup-ratelimit.sh"), "utf8"))![1];

/** The rate limit service and Redis a rendering deploys for llm-throttle's global rules, found from the throttle's side. */
function rateLimitDeployment(docs: Manifest[]) {
  const throttle = one(docs, "WasmPlugin", "llm-throttle").spec.pluginConfig;
  const m = ISTIO_CLUSTER.exec(throttle.rate_limit_service.cluster);
  assert.ok(m, `rate_limit_service.cluster ${throttle.rate_limit_service.cluster} is not an Istio outbound|<port>||<host> name`);
  const [, port, name, namespace] = m;
  const service = one(docs, "Service", name);
  assert.equal(service.metadata.namespace, namespace, "the cluster's host names the Service's namespace");
  const servicePort = service.spec.ports.find((p: any) => p.port === Number(port));
  assert.ok(servicePort, `Service ${name} has no port ${port}`);
  const deployment = selectedDeployment(docs, service);
  const container = deployment.spec.template.spec.containers[0];
  return { throttle, service, servicePort, deployment, container, env: envOf(container) };
}

for (const [where, docs] of renderings) {
  describe(`${where}: cluster-wide budgets`, () => {
    const throttle = one(docs, "WasmPlugin", "llm-throttle").spec.pluginConfig;
    const globalRules = (throttle.rules ?? []).filter((r: any) => r.backend === "global");

    test("prod counts each API key's budget once for every replica; base and dev keep it per replica", () => {
      assert.deepEqual(globalRules.map((r: any) => r.name), where === "k8s/overlays/prod" ? ["per-api-key"] : []);
      assert.equal(throttle.rate_limit_service !== undefined, globalRules.length > 0, "a rate limit service exactly where a rule uses it");
    });
    if (globalRules.length === 0) return;

    test("llm-throttle calls the Istio cluster of the service's gRPC port, which reaches the service's gRPC listener", () => {
      const { servicePort, container, env } = rateLimitDeployment(docs);
      // Istio picks a port's protocol by appProtocol, else by its name's prefix; gRPC needs HTTP/2.
      assert.equal(servicePort.appProtocol, "grpc");
      assert.match(servicePort.name, /^grpc(-|$)/);
      assert.equal(String(servicePort.targetPort), env.GRPC_PORT);
      assert.ok(container.ports.some((p: any) => p.containerPort === servicePort.targetPort), "the container declares the gRPC port");
      // The sidecar and the agent's probes reach the app at the pod's address; debugging stays inside.
      assert.deepEqual([env.GRPC_HOST, env.HOST, env.DEBUG_HOST, env.USE_STATSD], ["0.0.0.0", "0.0.0.0", "127.0.0.1", "false"]);
      assert.equal(container.readinessProbe.httpGet.path, "/healthcheck");
      assert.equal(String(container.readinessProbe.httpGet.port), env.PORT);
      assert.equal(env.HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED, "true", "not ready before its domain is loaded");
    });

    test("the service's config is a ConfigMap naming only the throttle's domain, mounted where the service reads it", () => {
      const { deployment, container, env } = rateLimitDeployment(docs);
      const mount = container.volumeMounts.find((v: any) => v.mountPath === `${env.RUNTIME_ROOT}/${env.RUNTIME_SUBDIRECTORY}/${env.RUNTIME_APPDIRECTORY}`);
      assert.ok(mount, "a volume mounted at RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY");
      const volume = deployment.spec.template.spec.volumes.find((v: any) => v.name === mount.name);
      const configMap = one(docs, "ConfigMap", volume.configMap.name);
      assert.equal(configMap.metadata.namespace, deployment.metadata.namespace);
      const files = Object.values(configMap.data);
      assert.equal(files.length, 1);
      assert.deepEqual(parse(files[0] as string), { domain: throttle.rate_limit_service.domain });
      // A ConfigMap volume holds its files behind a `..data` symlink: read whole, the domain loads twice.
      assert.deepEqual([env.RUNTIME_IGNOREDOTFILES, env.RUNTIME_WATCH_ROOT], ["true", "false"]);
    });

    test("the service counts in the Redis its Service names", () => {
      const { deployment, env } = rateLimitDeployment(docs);
      assert.equal(env.REDIS_SOCKET_TYPE, "tcp");
      const [host, port] = env.REDIS_URL.split(":");
      const redisService = one(docs, "Service", host.split(".")[0]);
      assert.ok(host === redisService.metadata.name || host === `${redisService.metadata.name}.${redisService.metadata.namespace}.svc.cluster.local`, host);
      assert.equal(redisService.metadata.namespace, deployment.metadata.namespace);
      const redisPort = redisService.spec.ports.find((p: any) => p.port === Number(port));
      assert.ok(redisPort, `Service ${redisService.metadata.name} has no port ${port}`);
      assert.match(redisPort.name, /^tcp(-|$)/, "plain TCP to Istio");
      const redis = selectedDeployment(docs, redisService);
      assert.ok(redis.spec.template.spec.containers[0].ports.some((p: any) => p.containerPort === redisPort.targetPort));
      assert.equal(redis.spec.replicas, 1, "one Redis: two would split every counter");
      assert.equal(redis.spec.strategy.type, "Recreate", "never two at once, not even during a rollout");
    });

    test("mTLS both ways, and only the gateway may call the service, only the service may call Redis", () => {
      const { service, servicePort, deployment, env } = rateLimitDeployment(docs);
      const gateway = one(docs, "Deployment", "llm-gateway");
      const redisService = one(docs, "Service", env.REDIS_URL.split(":")[0].split(".")[0]);
      const peer = one(docs, "PeerAuthentication");
      assert.equal(peer.spec.selector, undefined, "the namespace-wide STRICT mode covers the service and Redis too");
      assert.equal(peer.spec.mtls.mode, "STRICT");
      const principal = (d: Manifest) => `cluster.local/ns/${d.metadata.namespace}/sa/${d.spec.template.spec.serviceAccountName}`;
      for (const [callee, caller, port] of [[service, gateway, servicePort], [redisService, deployment, redisService.spec.ports[0]]] as const) {
        const host = `${callee.metadata.name}.${callee.metadata.namespace}.svc.cluster.local`;
        const rules = docs.filter((d) => d.kind === "DestinationRule" && d.spec.host === host);
        assert.deepEqual(rules.map((r) => r.spec.trafficPolicy.tls.mode), ["ISTIO_MUTUAL"], host);
        const policies = docs.filter((d) => d.kind === "AuthorizationPolicy" && Object.entries(d.spec.selector?.matchLabels ?? {}).every(([k, v]) => callee.spec.selector[k] === v));
        assert.equal(policies.length, 1, `one AuthorizationPolicy for ${callee.metadata.name}`);
        const [policy] = policies;
        assert.equal(policy.spec.action, "ALLOW");
        assert.deepEqual(policy.spec.rules.flatMap((r: any) => r.from.flatMap((f: any) => f.source.principals)), [principal(caller)]);
        assert.deepEqual(policy.spec.rules.flatMap((r: any) => r.to.flatMap((t: any) => t.operation.ports)), [String(port.targetPort)]);
      }
    });

    test("the service's image is the commit the tests build, and both images are pinned by digest", () => {
      const { container } = rateLimitDeployment(docs);
      const image = /^docker\.io\/envoyproxy\/ratelimit:([0-9a-f]{8})@sha256:[0-9a-f]{64}$/.exec(container.image);
      assert.ok(image, container.image);
      assert.equal(image[1], testedServiceCommit().slice(0, 8), "the tag is the commit scripts/setup-ratelimit.sh pins");
      const redisService = one(docs, "Service", rateLimitDeployment(docs).env.REDIS_URL.split(":")[0].split(".")[0]);
      assert.match(selectedDeployment(docs, redisService).spec.template.spec.containers[0].image, /^docker\.io\/library\/redis:[\w.-]+@sha256:[0-9a-f]{64}$/);
    });

    test("while the service is unreachable, the replicas' local shares add up to at most one budget", () => {
      const replicas = one(docs, "Deployment", "llm-gateway").spec.replicas;
      for (const rule of globalRules) {
        if ((rule.on_service_failure ?? "local") !== "local") continue;
        const total = (rule.local_share ?? 0.5) * replicas;
        assert.ok(total <= 1 && total >= 0.9, `${rule.name}: local_share ${rule.local_share} x ${replicas} replicas = ${total} budgets`);
      }
    });
  });
}

/**
 * Writes a ConfigMap's data into `dir` the way the kubelet mounts it: the files in a timestamped
 * directory, `..data` a symlink to it, and each file a symlink through `..data`.
 */
function mountConfigMap(dir: string, data: Record<string, string>): void {
  const version = "..2026_01_01_00_00_00.000000001";
  mkdirSync(join(dir, version), { recursive: true });
  for (const [file, text] of Object.entries(data)) writeFileSync(join(dir, version, file), text);
  symlinkSync(version, join(dir, "..data"));
  for (const file of Object.keys(data)) symlinkSync(join("..data", file), join(dir, file));
}

describe("the prod rate limit service's Deployment, run with the real service", () => {
  const docs = renderings.get("k8s/overlays/prod")!;
  let redis: Redis;
  let service: RateLimitService;
  before(async () => {
    const { deployment, container, env, throttle } = rateLimitDeployment(docs);
    const root = mkdtempSync(join(scratch, "ratelimit-"));
    const mount = container.volumeMounts[0];
    const volume = deployment.spec.template.spec.volumes.find((v: any) => v.name === mount.name);
    mountConfigMap(join(root, relative(env.RUNTIME_ROOT, mount.mountPath)), one(docs, "ConfigMap", volume.configMap.name).data);
    redis = await startRedis();
    // The pod's environment as it is, but for where it listens and finds Redis, on loopback here,
    // and where the ConfigMap is mounted (the helper's own config file is then not read).
    const { PORT, GRPC_PORT, DEBUG_PORT, ...podEnv } = env;
    service = await startRateLimitService({
      redis,
      domain: throttle.rate_limit_service.domain,
      env: { ...podEnv, HOST: "127.0.0.1", GRPC_HOST: "127.0.0.1", DEBUG_HOST: "127.0.0.1", REDIS_URL: redis.address, RUNTIME_ROOT: root },
    });
  });
  after(async () => {
    await service?.stop();
    await redis?.stop();
  });

  test("loads the ConfigMap as the kubelet mounts it and enforces the limit a descriptor of the throttle's domain carries", async () => {
    const ask = () => shouldRateLimit(service.grpcAddress, {
      domain: rateLimitDeployment(docs).throttle.rate_limit_service.domain,
      descriptors: [{ entries: [["rule", "per-api-key"], ["key", "k8s-test"], ["limit", "tokens"]], limit: { requestsPerUnit: 100, unit: "MINUTE" }, hitsAddend: 60 }],
    });
    const first = await ask();
    assert.equal(first.status, 0, first.message);
    assert.equal(first.response?.overallCode, "OK");
    // A domain the service had not loaded would be answered OK too, but without the limit.
    assert.deepEqual(first.response?.statuses[0].currentLimit, { requestsPerUnit: 100, unit: 2, name: "" });
    assert.equal((await ask()).response?.overallCode, "OVER_LIMIT");
  });
});

describe("tracing", () => {
  const provider = parseYamlDocuments(readFileSync(join(istioInstallDir, "tracing-provider.yaml"), "utf8"), "k8s/istio/tracing-provider.yaml")[0];
  /** envoy/tracing.yaml's custom tags, the ones test/tracing.test.ts sees on spans: tag -> formatter. */
  const envoyTags = (() => {
    const yaml = parse(readFileSync(join(repoDir, "envoy", "tracing.yaml"), "utf8").replace(/\{\{[A-Z_]+\}\}/g, "0"));
    const hcm = yaml.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    return Object.fromEntries(hcm.tracing.custom_tags.map((t: { tag: string; value: string }) => [t.tag, t.value]));
  })();

  test("k8s/istio/tracing-provider.yaml is an IstioOperator defining one OpenTelemetry provider", async () => {
    assert.equal(await schemaProblem(provider), null);
    // The IstioOperator schema leaves meshConfig open, so the provider's fields are checked here, by
    // their names in Istio's MeshConfig.ExtensionProvider.OpenTelemetryTracingProvider.
    const providers = provider.spec.meshConfig.extensionProviders;
    assert.equal(providers.length, 1);
    assert.deepEqual(Object.keys(providers[0]), ["name", "opentelemetry"]);
    for (const key of Object.keys(providers[0].opentelemetry)) assert.ok(["service", "port", "maxTagLength", "http", "grpc", "resourceDetectors", "dynatraceSampler"].includes(key), key);
    assert.match(providers[0].opentelemetry.service, /^[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local$/);
    assert.equal(providers[0].opentelemetry.port, 4317, "OTLP over gRPC");
  });

  for (const [where, docs] of renderings) {
    const telemetry = one(docs, "Telemetry", "llm-gateway-tracing");
    const gateway = one(docs, "Deployment", "llm-gateway");
    const [rule] = telemetry.spec.tracing;

    test(`${where}: the Telemetry traces the LLM gateway's pods to the provider the mesh config defines`, () => {
      assert.equal(telemetry.metadata.namespace, gateway.metadata.namespace);
      for (const [key, value] of Object.entries(telemetry.spec.selector.matchLabels)) assert.equal(gateway.spec.template.metadata.labels[key], value);
      assert.equal(telemetry.spec.tracing.length, 1);
      assert.deepEqual(rule.providers.map((p: { name: string }) => p.name), provider.spec.meshConfig.extensionProviders.map((p: { name: string }) => p.name));
    });

    test(`${where}: its custom tags are envoy/tracing.yaml's, formatter tags of llm-mesh filter state, none with text`, () => {
      const tags = Object.fromEntries(Object.entries(rule.customTags).map(([tag, spec]: [string, any]) => [tag, spec.formatter?.value]));
      assert.deepEqual(tags, envoyTags);
      for (const [tag, value] of Object.entries(tags)) {
        assert.match(value as string, /^%FILTER_STATE\(wasm\.llm_mesh\.[a-z_]+:PLAIN\)%$/, tag);
        assert.match(tag, /^(gen_ai|llm_mesh)\./, tag);
      }
      // The router's record carries the start of the answer: it stays in the access log.
      assert.ok(!Object.values(tags).some((v) => String(v).includes("llm_mesh.record")));
    });
  }

  test("development keeps every trace that starts at the gateway, production 1 %", () => {
    const sampling = (where: string) => one(renderings.get(where)!, "Telemetry").spec.tracing[0].randomSamplingPercentage;
    assert.deepEqual(["k8s/base", "k8s/overlays/dev", "k8s/overlays/prod"].map(sampling), [1, 100, 1]);
  });
});

describe("rolling a canary", () => {
  /** The canary's share as the mesh splits it and as llm-router does: they must agree. */
  const splitWeights = (docs: Manifest[]) => {
    const split = one(docs, "VirtualService", "llm-model").spec.http.find((r: any) => r.name === "split");
    const weights = Object.fromEntries(split.route.map((d: any) => [d.destination.subset, d.weight]));
    const rollout = one(docs, "WasmPlugin", "llm-router").spec.pluginConfig.rules.find((r: any) => r.name === "rollout");
    assert.deepEqual(rollout.weights, weights, "llm-router's rollout follows the split");
    return weights;
  };
  /** A copy of k8s/ in which a test may edit files as a platform engineer would. */
  function copyOfK8s(): string {
    const dir = mkdtempSync(join(scratch, "tree-"));
    cpSync(k8sDir, join(dir, "k8s"), { recursive: true });
    return join(dir, "k8s");
  }

  test("forward and back by editing the weights in overlays/prod/canary.yaml", () => {
    assert.deepEqual(splitWeights(renderings.get("k8s/overlays/prod")!), { primary: 95, canary: 5 });
    const k8s = copyOfK8s();
    for (const [primary, canary] of [[75, 25], [50, 50], [0, 100], [100, 0]]) {
      setCanaryWeights(k8s, "prod", primary, canary);
      assert.deepEqual(splitWeights(render(join(k8s, "overlays", "prod"))), { primary, canary });
    }
  });

  test("kustomize refuses the weights when the route they edit has moved in the base", () => {
    const k8s = copyOfK8s();
    const file = join(k8s, "base", "virtual-service.yaml");
    const vs = parse(readFileSync(file, "utf8"));
    vs.spec.http.reverse();
    writeFileSync(file, stringify(vs));
    assert.throws(() => render(join(k8s, "overlays", "prod")), /test|split/);
  });
});

/**
 * A bootstrap whose HTTP chain is the extension config a hold-headers EnvoyFilter adds, with its code
 * swapped for the local build the way istio-agent swaps the fetched image in.
 */
function bootstrapWith(filter: Manifest, wasmFile: string, configurationValue?: string): string {
  const ecds = structuredClone(filter.spec.configPatches.find((p: any) => p.applyTo === "EXTENSION_CONFIG").patch.value);
  ecds.typed_config.config.vm_config.code = { local: { filename: wasmFile } };
  if (configurationValue !== undefined) ecds.typed_config.config.configuration.value = configurationValue;
  const bootstrap = {
    static_resources: {
      listeners: [{
        name: "gateway",
        address: { socket_address: { address: "127.0.0.1", port_value: 0 } },
        filter_chains: [{
          filters: [{
            name: "envoy.filters.network.http_connection_manager",
            typed_config: {
              "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
              stat_prefix: "gateway",
              route_config: { virtual_hosts: [{ name: "all", domains: ["*"], routes: [{ match: { prefix: "/" }, direct_response: { status: 200 } }] }] },
              http_filters: [
                { name: ecds.name, typed_config: ecds.typed_config },
                { name: "envoy.filters.http.router", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
              ],
            },
          }],
        }],
      }],
    },
  };
  const path = join(mkdtempSync(join(scratch, "envoy-")), "bootstrap.json");
  writeFileSync(path, JSON.stringify(bootstrap));
  return path;
}

const validate = (path: string) =>
  spawnSync(envoyBinary(), ["--mode", "validate", "-c", path, "-l", "warning", "--component-log-level", "wasm:info"], { encoding: "utf8", timeout: 60_000 });

describe("the hold-headers EnvoyFilter in the real Envoy", () => {
  const admissionWasm = join(repoDir, "build", "admission.wasm");
  const filter = () => one(renderings.get("k8s/base")!, "EnvoyFilter", "llm-admission-hold-headers");

  test("its extension config loads llm-admission with the flag and the configuration as the filter reads it", () => {
    assert.ok(existsSync(admissionWasm), "build/admission.wasm is missing: run npm run build");
    const result = validate(bootstrapWith(filter(), admissionWasm));
    assert.equal(result.status, 0, result.stdout + result.stderr);
  });

  test("a configuration the filter refuses fails the same load (the check above is not vacuous)", () => {
    const result = validate(bootstrapWith(filter(), admissionWasm, JSON.stringify({ hold_headers: "yes" })));
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /llm-admission\[\d+\]: invalid configuration, refusing to start: hold_headers: must be true or false/);
  });
});

describe("as one module (scripts/one-module.ts)", () => {
  const meshWasm = join(repoDir, "build", "mesh.wasm");
  const converted = new Map([...renderings].map(([where, docs]) => [where, asOneModule(docs)]));

  for (const [where, docs] of renderings) {
    const out = converted.get(where)!;
    const plugins = docs.filter((d) => d.kind === "WasmPlugin");
    const admission = one(plugins, "WasmPlugin", "llm-admission");

    test(`${where}: one WasmPlugin for build/mesh.wasm carries the four pluginConfigs as its sections`, () => {
      const mesh = one(out, "WasmPlugin");
      assert.equal(mesh.metadata.name, "llm-mesh");
      assert.equal(mesh.spec.pluginName, "llm-mesh");
      assert.deepEqual(mesh.spec.pluginConfig, Object.fromEntries(STAGES.map((s) => [s, one(plugins, "WasmPlugin", `llm-${s}`).spec.pluginConfig])));
      assert.deepEqual(Object.keys(mesh.spec.pluginConfig), ["admission", "throttle", "metrics", "router"], "sections in stage order");
      assert.deepEqual([mesh.spec.phase, mesh.spec.priority, mesh.spec.failStrategy], ["AUTHZ", -100, "FAIL_RELOAD"]);
      assert.equal(mesh.spec.url, admission.spec.url.replace("/admission:", "/mesh:"));
      assert.equal(mesh.spec.sha256, "0".repeat(64), "unpinned: the placeholder that matches no image");
      assert.deepEqual([mesh.metadata.namespace, mesh.spec.selector], [admission.metadata.namespace, admission.spec.selector]);
    });

    test(`${where}: everything else is left as the overlay renders it, in the same order`, () => {
      const rest = (list: Manifest[]) => list.filter((d) => d.kind !== "WasmPlugin" && d.kind !== "EnvoyFilter");
      assert.deepEqual(rest(out), rest(docs));
      assert.deepEqual(out.map((d) => d.kind), docs.filter((d) => d.kind !== "WasmPlugin" || d === admission).map((d) => d.kind));
    });

    test(`${where}: the hold-headers EnvoyFilter serves llm-mesh, in step with its WasmPlugin`, () => {
      const mesh = one(out, "WasmPlugin", "llm-mesh");
      const filter = one(out, "EnvoyFilter");
      const ecds = filter.spec.configPatches.find((p: any) => p.applyTo === "EXTENSION_CONFIG").patch.value;
      const replaces = filter.spec.configPatches.filter((p: any) => p.applyTo === "HTTP_FILTER");
      assert.deepEqual(replaces.map((r: any) => r.match.listener.filterChain.filter.subFilter.name), [
        "extensions.istio.io/wasmplugin/llm-serving.llm-mesh",
        "extensions.istio.io/trafficextension/llm-serving.llm-mesh~istio-translated-wasmplugin",
      ]);
      for (const replace of replaces) assert.equal(replace.patch.value.name, ecds.name);
      const config = ecds.typed_config.config;
      assert.equal(config.allow_on_headers_stop_iteration, true);
      assert.equal(config.root_id, "llm-mesh");
      assert.equal(config.failure_policy, FAIL_POLICY[mesh.spec.failStrategy]);
      assert.equal(config.vm_config.code.remote.http_uri.uri, mesh.spec.url);
      assert.equal(config.vm_config.code.remote.sha256, mesh.spec.sha256);
      assert.deepEqual(JSON.parse(config.configuration.value), mesh.spec.pluginConfig);
    });

    test(`${where}: the result passes Istio's and Kubernetes' schemas, with no unknown field`, async () => {
      const changed = out.filter((d) => d.kind === "WasmPlugin" || d.kind === "EnvoyFilter");
      assert.deepEqual((await Promise.all(changed.map(schemaProblem))).filter(Boolean), []);
      assert.deepEqual(unknownFields(changed.map((doc) => ({ where: `${where} ${describeDoc(doc)}`, doc }))), []);
    });
  }

  test("the real Envoy loads build/mesh.wasm from the prod EnvoyFilter with every section, and refuses a broken one", () => {
    assert.ok(existsSync(meshWasm), "build/mesh.wasm is missing: run npm run build");
    const filter = one(converted.get("k8s/overlays/prod")!, "EnvoyFilter");
    const loaded = validate(bootstrapWith(filter, meshWasm));
    assert.equal(loaded.status, 0, loaded.stdout + loaded.stderr);
    const sections = JSON.parse(filter.spec.configPatches.find((p: any) => p.applyTo === "EXTENSION_CONFIG").patch.value.typed_config.config.configuration.value);
    sections.throttle.rules[0].limits.requests_per_second = -1;
    const refused = validate(bootstrapWith(filter, meshWasm, JSON.stringify(sections)));
    assert.notEqual(refused.status, 0);
    assert.match(refused.stdout + refused.stderr, /llm-mesh\[\d+\]: invalid configuration, refusing to start: throttle\.rules\[0\]\.limits\.requests_per_second/);
  });

  test("npm run one-module prints it for an overlay, pinned by --sha256, and refuses a digest that is not one", () => {
    const run = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", join(repoDir, "scripts", "one-module.ts"), ...args], { cwd: repoDir, encoding: "utf8" });
    const digest = "ab".repeat(32);
    const printed = run("k8s/overlays/dev", "--sha256", `sha256:${digest}`);
    assert.equal(printed.status, 0, printed.stderr);
    const mesh = one(parseYamlDocuments(printed.stdout, "one-module output"), "WasmPlugin");
    assert.equal(mesh.spec.sha256, digest);
    assert.deepEqual(mesh.spec.pluginConfig.throttle, one(renderings.get("k8s/overlays/dev")!, "WasmPlugin", "llm-throttle").spec.pluginConfig, "the overlay's own budgets");
    const refused = run("k8s/overlays/dev", "--sha256", "latest");
    assert.equal(refused.status, 2);
    assert.match(refused.stderr, /--sha256 "latest": not a sha256 digest/);
  });
});
