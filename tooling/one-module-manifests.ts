// The rewrite behind `npm run one-module` (scripts/one-module.ts): an Istio deployment rendered from
// k8s/, with the four llm-* WasmPlugins replaced by one WasmPlugin for build/mesh.wasm whose
// pluginConfig holds their configurations as sections, and the hold-headers EnvoyFilter serving that
// plugin instead of llm-admission. The k8s and Istio tests apply the same rewrite.
//
// Not a kustomize overlay: the EnvoyFilter must carry the plugin's configuration as JSON text (Envoy
// hands a plugin a google.protobuf.Struct as protobuf bytes, not JSON), and kustomize can copy a map
// but cannot write one out as text. Reading the rendered overlay also keeps each overlay's own
// budgets and canary weights.
//
// The image defaults to the `mesh` repository beside llm-admission's (`npm run publish` pushes
// build/mesh.wasm there with the filters); without a sha256 the digest is the all-zero placeholder
// the base uses, which matches no image, so an unpinned deployment fails at the pull.
import { stringify } from "yaml";
import { type Manifest, wasmPluginFilterNames } from "./manifests.ts";
import { STAGES } from "./one-module.ts";

export const ONE_MODULE_PLUGIN = "llm-mesh";
const PLACEHOLDER_DIGEST = "0".repeat(64);
const FAIL_POLICY: Record<string, string> = { FAIL_CLOSE: "FAIL_CLOSED", FAIL_OPEN: "FAIL_OPEN", FAIL_RELOAD: "FAIL_RELOAD" };

export interface ImagePin {
  /** The module's image; by default the `mesh` repository beside llm-admission's, same tag. */
  url?: string;
  /** Its manifest digest, with or without "sha256:". */
  sha256?: string;
}

const stageOf = (doc: Manifest) => (doc.kind === "WasmPlugin" ? STAGES.find((s) => doc.spec?.pluginName === `llm-${s}`) : undefined);

/** `oci://host/llm-mesh/admission:0.1.0` → `oci://host/llm-mesh/mesh:0.1.0`. */
function siblingImage(url: string, stage: string): string | null {
  const match = new RegExp(`^(.*/)${stage}((?::[\\w.-]+)?(?:@sha256:[a-f0-9]{64})?)$`).exec(url);
  return match ? `${match[1]}mesh${match[2].replace(/@sha256:.*$/, "")}` : null;
}

function digestOf(sha256: string | undefined): string {
  if (sha256 === undefined) return PLACEHOLDER_DIGEST;
  const digest = sha256.replace(/^sha256:/, "");
  if (!/^[a-f0-9]{64}$/.test(digest)) throw new Error(`--sha256 "${sha256}": not a sha256 digest (64 hex digits, as npm run publish prints after @sha256:)`);
  return digest;
}

/**
 * The deployment with the llm-* WasmPlugins replaced by one llm-mesh WasmPlugin. It takes the
 * strictest of their settings: phase AUTHZ with priority -100, where llm-throttle sits (after an
 * API-key check, so that a refused caller spends no budget), and FAIL_RELOAD, what admission,
 * throttle and router each ask for.
 */
export function asOneModule(docs: Manifest[], pin: ImagePin = {}): Manifest[] {
  const plugins = docs.filter((d) => stageOf(d) !== undefined);
  if (plugins.length === 0) throw new Error("no llm-* WasmPlugin in it: nothing to put in one module");
  const first = plugins.find((p) => stageOf(p) === "admission") ?? plugins[0];
  for (const plugin of plugins) {
    if (plugin.metadata.namespace !== first.metadata.namespace || JSON.stringify(plugin.spec.selector) !== JSON.stringify(first.spec.selector)) {
      throw new Error(`WasmPlugin ${plugin.metadata.name} selects other pods than ${first.metadata.name}: one module runs every stage in the same proxy`);
    }
  }
  const url = pin.url ?? siblingImage(first.spec.url, stageOf(first)!);
  if (!url) throw new Error(`cannot tell the one module's image from ${first.metadata.name}'s url ${first.spec.url}: give --url`);

  const sections: Record<string, unknown> = {};
  for (const stage of STAGES) {
    const plugin = plugins.find((p) => stageOf(p) === stage);
    if (plugin) sections[stage] = plugin.spec.pluginConfig ?? {};
  }
  const { imagePullSecret, imagePullPolicy, selector } = first.spec;
  const mesh: Manifest = {
    apiVersion: first.apiVersion,
    kind: "WasmPlugin",
    metadata: { name: ONE_MODULE_PLUGIN, namespace: first.metadata.namespace, ...(first.metadata.labels ? { labels: first.metadata.labels } : {}) },
    spec: {
      selector,
      url,
      sha256: digestOf(pin.sha256),
      ...(imagePullPolicy ? { imagePullPolicy } : {}),
      ...(imagePullSecret ? { imagePullSecret } : {}),
      pluginName: ONE_MODULE_PLUGIN,
      phase: "AUTHZ",
      priority: -100,
      failStrategy: "FAIL_RELOAD",
      pluginConfig: sections,
    },
  };

  const out: Manifest[] = [];
  for (const doc of docs) {
    if (doc === first) out.push(mesh);
    else if (plugins.includes(doc)) continue;
    else out.push(servesPlugin(doc, first) ? holdHeadersFor(doc, mesh) : doc);
  }
  return out;
}

const extensionConfigPatch = (filter: Manifest) => filter.spec.configPatches.find((p: any) => p.applyTo === "EXTENSION_CONFIG");
const httpFilterPatches = (filter: Manifest) => filter.spec.configPatches.filter((p: any) => p.applyTo === "HTTP_FILTER" && p.patch?.operation === "REPLACE");
const replacedName = (patch: any): string | undefined => patch.match?.listener?.filterChain?.filter?.subFilter?.name;

/** An EnvoyFilter that swaps the plugin's HTTP filter for one with allow_on_headers_stop_iteration (k8s/base/hold-headers-envoyfilter.yaml). */
function servesPlugin(doc: Manifest, plugin: Manifest): boolean {
  if (doc.kind !== "EnvoyFilter") return false;
  const names = wasmPluginFilterNames(plugin.metadata.namespace!, plugin.metadata.name);
  return httpFilterPatches(doc).some((p: any) => names.includes(replacedName(p)!)) && extensionConfigPatch(doc) !== undefined;
}

function holdHeadersFor(filter: Manifest, plugin: Manifest): Manifest {
  const copy = structuredClone(filter);
  const namespace = plugin.metadata.namespace!;
  const extensionName = `${namespace}.${plugin.metadata.name}-hold-headers`;
  copy.metadata.name = `${plugin.metadata.name}-hold-headers`;
  const extension = extensionConfigPatch(copy).patch.value;
  extension.name = extensionName;
  const config = extension.typed_config.config;
  config.name = `${namespace}.${plugin.metadata.name}`;
  config.root_id = plugin.spec.pluginName;
  config.failure_policy = FAIL_POLICY[plugin.spec.failStrategy];
  config.vm_config.code.remote.http_uri.uri = plugin.spec.url;
  config.vm_config.code.remote.sha256 = plugin.spec.sha256;
  config.configuration = { "@type": "type.googleapis.com/google.protobuf.StringValue", value: JSON.stringify(plugin.spec.pluginConfig, null, 2) };
  // The same replacements, one per name Istio may give the plugin's filter, now naming this plugin.
  const replaces = httpFilterPatches(copy);
  const names = wasmPluginFilterNames(namespace, plugin.metadata.name);
  if (replaces.length !== names.length) throw new Error(`EnvoyFilter ${filter.metadata.name}: expected ${names.length} HTTP filter replacements (one per Istio naming), found ${replaces.length}`);
  replaces.forEach((replace: any, i: number) => {
    replace.match.listener.filterChain.filter.subFilter.name = names[i];
    replace.patch.value.name = extensionName;
  });
  return copy;
}

export function manifestsText(docs: Manifest[]): string {
  return docs.map((doc) => stringify(doc, { aliasDuplicateObjects: false, lineWidth: 0 })).join("---\n");
}
