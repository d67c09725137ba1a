// llm-mesh's filters as one module (build/mesh.wasm): rewrites an Envoy config that chains the
// separate llm-* Wasm filters into one that runs the same configurations as sections of one filter,
// so the same scenario can be run both ways.
import { parse, stringify } from "yaml";

const WASM_FILTER = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/**
 * The filters in the order a request meets them: the order docs/request-flow.md shows and Istio's phases
 * give, and the order of the one module's stages (STAGE_NAMES in assembly/mesh/filter.ts).
 */
export const STAGES: readonly string[] = ["admission", "throttle", "metrics", "router"];

interface HttpFilter {
  name: string;
  typed_config?: {
    "@type"?: string;
    config?: { root_id?: string; allow_on_headers_stop_iteration?: boolean; configuration?: { value?: string }; vm_config?: { code?: { local?: { filename?: string } } } };
  };
}

/** The section name of an llm-mesh Wasm filter ("llm-throttle" → "throttle"), or null for any other filter. */
function stageOf(filter: HttpFilter): string | null {
  const config = filter.typed_config?.config;
  if (filter.typed_config?.["@type"] !== WASM_FILTER || !config?.root_id?.startsWith("llm-")) return null;
  return config.root_id.slice("llm-".length);
}

/**
 * An http_filters entry (Envoy JSON) for an llm-mesh Wasm module read from `wasmFile`: its root id,
 * its configuration as JSON text, the VM id every llm-mesh filter shares, and (unless told otherwise)
 * the header pause that admission's hold_headers needs.
 */
export function wasmHttpFilter(name: string, rootId: string, configuration: string, wasmFile: string, allowOnHeadersStopIteration = true): HttpFilter {
  return {
    name,
    typed_config: {
      "@type": WASM_FILTER,
      config: {
        name,
        root_id: rootId,
        allow_on_headers_stop_iteration: allowOnHeadersStopIteration,
        configuration: { "@type": "type.googleapis.com/google.protobuf.StringValue", value: configuration },
        vm_config: { vm_id: "llm-mesh", runtime: "envoy.wasm.runtime.v8", code: { local: { filename: wasmFile } } },
      } as never,
    },
  };
}

/**
 * Every chain of llm-* filters in an HTTP connection manager, replaced by build/mesh.wasm with their
 * configurations as sections. The module gets the header pause when some filter of the chain had it,
 * so a chain without it (envoy/hold-headers.yaml) stays without it.
 */
export function asOneModule(yaml: string): string {
  const doc = parse(yaml);
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (node === null || typeof node !== "object") return;
    const record = node as Record<string, unknown>;
    const filters = record.http_filters as HttpFilter[] | undefined;
    if (Array.isArray(filters)) {
      const stages = filters.filter((f) => stageOf(f) !== null);
      if (stages.length > 0) {
        const sections: Record<string, unknown> = {};
        for (const f of stages) sections[stageOf(f)!] = JSON.parse(f.typed_config!.config!.configuration?.value || "{}");
        const file = stages[0].typed_config!.config!.vm_config!.code!.local!.filename!.replace(/[^/]+\.wasm$/, "mesh.wasm");
        const first = filters.indexOf(stages[0]);
        const pause = stages.some((f) => f.typed_config!.config!.allow_on_headers_stop_iteration === true);
        const mesh = wasmHttpFilter("llm-mesh", "llm-mesh", JSON.stringify(sections), file, pause);
        record.http_filters = [...filters.slice(0, first), mesh, ...filters.slice(first).filter((f) => stageOf(f) === null)];
      }
    }
    Object.values(record).forEach(visit);
  };
  visit(doc);
  return stringify(doc, { aliasDuplicateObjects: false });
}
