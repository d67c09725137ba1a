// The Kubernetes manifests under k8s/ as the cluster would get them: each kustomization (the base
// and every overlay) rendered by kustomize, and the plugin configurations inside them.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { parse, parseAllDocuments, stringify } from "yaml";
import { repoDir } from "./envoy-bin.ts";

export const k8sDir = join(repoDir, "k8s");

export type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: any;
  [key: string]: any;
};

/** Parses a multi-document YAML text; a document with errors throws with the source named. */
export function parseYamlDocuments(text: string, source: string): any[] {
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length) throw new Error(`${source}: ${doc.errors[0].message}`);
      return doc.toJS();
    })
    .filter((doc) => doc != null);
}

/**
 * The command that renders a kustomization: $KUSTOMIZE, else `kustomize`, else `kubectl kustomize`
 * (kubectl carries kustomize since 1.14). Null when none is installed.
 */
export function kustomizeCommand(): string[] | null {
  const candidates = [process.env.KUSTOMIZE ? [process.env.KUSTOMIZE, "build"] : null, ["kustomize", "build"], ["kubectl", "kustomize"]];
  for (const candidate of candidates) {
    if (!candidate) continue;
    const probe = spawnSync(candidate[0], candidate[0] === "kubectl" ? ["version", "--client"] : ["version"], { stdio: "ignore" });
    if (probe.status === 0) return candidate;
  }
  return null;
}

let command: string[] | null | undefined;

/** Renders the kustomization in `dir`; throws with kustomize's own message when it refuses. */
export function render(dir: string): Manifest[] {
  command ??= kustomizeCommand();
  if (!command) throw new Error("no kustomize: install kubectl or kustomize (go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0), or set KUSTOMIZE");
  const result = spawnSync(command[0], [...command.slice(1), dir], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (result.status !== 0) throw new Error(`kustomize ${relative(repoDir, dir) || dir}: ${result.stderr.trim()}`);
  return parseYamlDocuments(result.stdout, dir) as Manifest[];
}

/** Every directory under `root` holding a kustomization.yaml, with its `kind`. */
function kustomizationFiles(root: string): { dir: string; kind: string }[] {
  const found: { dir: string; kind: string }[] = [];
  const walk = (dir: string) => {
    const file = join(dir, "kustomization.yaml");
    if (existsSync(file)) found.push({ dir, kind: parse(readFileSync(file, "utf8"))?.kind ?? "Kustomization" });
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(dir, entry.name));
    }
  };
  walk(root);
  return found;
}

/**
 * Every kustomization under k8s/ that is a deployment of its own (base first, then the overlays), as
 * directories. Components (k8s/components/) are left out: they only make sense inside an overlay.
 */
export function kustomizationDirs(root: string = k8sDir): string[] {
  const dirs = kustomizationFiles(root).filter((k) => k.kind !== "Component").map((k) => k.dir);
  return dirs.sort((a, b) => Number(b.endsWith("/base")) - Number(a.endsWith("/base")) || a.localeCompare(b));
}

/** The kustomize components under k8s/, as directories. */
export function componentDirs(root: string = k8sDir): string[] {
  return kustomizationFiles(root).filter((k) => k.kind === "Component").map((k) => k.dir).sort();
}

export const FILTERS = ["admission", "throttle", "router", "metrics"] as const;

/**
 * The names Istio gives a WasmPlugin's HTTP filter in the chain, which an EnvoyFilter's `subFilter`
 * must match, on the Istio versions that run Envoy 1.35 or later: 1.26 to 1.29, then master, where
 * WasmPlugins are translated into TrafficExtensions.
 */
export function wasmPluginFilterNames(namespace: string, name: string): string[] {
  return [`extensions.istio.io/wasmplugin/${namespace}.${name}`, `extensions.istio.io/trafficextension/${namespace}.${name}~istio-translated-wasmplugin`];
}

export interface PluginConfigSite {
  filter: string;
  /** Where it was found, for messages. */
  where: string;
  config: unknown;
}

/**
 * The plugin configurations a rendering carries: every WasmPlugin's pluginConfig (named by its
 * pluginName, llm-<filter>) and every Wasm extension config an EnvoyFilter adds (by its root_id).
 */
export function pluginConfigs(docs: Manifest[], label: string): PluginConfigSite[] {
  const sites: PluginConfigSite[] = [];
  const filterOf = (rootId: string) => (rootId.startsWith("llm-") ? rootId.slice(4) : rootId);
  for (const doc of docs) {
    if (doc.kind === "WasmPlugin") {
      sites.push({ filter: filterOf(doc.spec.pluginName), where: `${label} WasmPlugin ${doc.metadata.name}`, config: doc.spec.pluginConfig ?? {} });
    }
    if (doc.kind === "EnvoyFilter") {
      for (const patch of doc.spec.configPatches ?? []) {
        const config = patch.patch?.value?.typed_config?.config;
        if (patch.applyTo !== "EXTENSION_CONFIG" || !config?.root_id) continue;
        const configuration = config.configuration ?? {};
        const value = configuration["@type"] === "type.googleapis.com/google.protobuf.StringValue" ? JSON.parse(configuration.value) : configuration.value ?? {};
        sites.push({ filter: filterOf(config.root_id), where: `${label} EnvoyFilter ${doc.metadata.name} (${patch.patch.value.name})`, config: value });
      }
    }
  }
  return sites;
}

/**
 * Sets the canary's share in a copy of k8s/ the way docs/istio.md tells users to: the two weights of
 * the VirtualService's split route in `overlays/<overlay>/canary.yaml`.
 */
export function setCanaryWeights(k8s: string, overlay: string, primary: number, canary: number): void {
  const file = join(k8s, "overlays", overlay, "canary.yaml");
  const ops = parse(readFileSync(file, "utf8"));
  for (const op of ops) {
    if (op.path === "/spec/http/3/route/0/weight") op.value = primary;
    if (op.path === "/spec/http/3/route/1/weight") op.value = canary;
  }
  writeFileSync(file, stringify(ops));
}
