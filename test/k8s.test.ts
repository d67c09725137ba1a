// The Istio deployment under k8s/: every kustomization (base and overlays) renders, every object in
// it passes the schema the cluster will hold it to (Istio's CRDs from @kubernetes-models/istio,
// Kubernetes' own from kubernetes-models), and the wiring between the objects is what docs/istio.md
// promises: filter order, pinned images, the hold-headers EnvoyFilter in step with its WasmPlugin,
// canary, mirror, circuit breaking, mTLS and the gateway-only policy. The canary is rolled forward
// and back by editing a weight, and the EnvoyFilter's plugin is loaded by the real Envoy.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { parse, stringify } from "yaml";
import { asOneModule } from "../tooling/one-module-manifests.ts";
import { envoyBinary, repoDir } from "../tooling/envoy-bin.ts";
import { FILTERS, k8sDir, kustomizationDirs, type Manifest, parseYamlDocuments, render, setCanaryWeights } from "../tooling/manifests.ts";
import { STAGES } from "../tooling/one-module.ts";

const scratch = mkdtempSync(join(repoDir, ".tmp", "k8s-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const label = (dir: string) => relative(repoDir, dir);
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
    for (const dir of kustomizationDirs()) {
      const kustomization = parse(readFileSync(join(dir, "kustomization.yaml"), "utf8"));
      used.add(join(dir, "kustomization.yaml"));
      const files = [...(kustomization.resources ?? []), ...(kustomization.components ?? []), ...(kustomization.patches ?? []).map((p: { path?: string }) => p.path)];
      for (const file of files.filter(Boolean)) used.add(resolve(dir, file));
    }
    const unused: string[] = [];
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        // Dashboards are JSON for Grafana, checked by the metrics tests.
        if (entry.isDirectory()) {
          if (path !== join(k8sDir, "dashboards")) walk(path);
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
      const policy = one(docs, "AuthorizationPolicy");
      assert.equal(policy.spec.action, "ALLOW");
      assert.deepEqual(policy.spec.selector.matchLabels, service.spec.selector);
      const principals = policy.spec.rules.flatMap((r: any) => r.from.flatMap((f: any) => f.source.principals));
      assert.deepEqual(principals, [`cluster.local/ns/${namespace}/sa/${gatewayDeployment.spec.template.spec.serviceAccountName}`]);
      assert.deepEqual(policy.spec.rules.flatMap((r: any) => r.to.flatMap((t: any) => t.operation.ports)), service.spec.ports.map((p: any) => String(p.targetPort)));
    });
  });
}

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
