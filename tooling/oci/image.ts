// Builds the two image formats Istio's WasmPlugin accepts for one proxy-wasm module.
//
//   wasm artifact (the solo.io "oci" variant, what `url: oci://...` prefers): an OCI manifest whose
//     layers are exactly the raw module (application/vnd.module.wasm.content.layer.v1+wasm) and the
//     runtime config (application/vnd.module.wasm.config.v1+json). Istio counts manifest layers and
//     wants exactly these two; the runtime config is also the manifest's config blob, as wasme did.
//   compat image: a plain OCI image whose last (only) layer is a tar+gzip holding plugin.wasm, for
//     registries or tools that only take standard media types.
//
// Both are single-platform manifests, never indexes: Istio's fetcher resolves an index by the
// node's platform, which a Wasm module doesn't have.
import { type Blob, canonicalJson, type Descriptor, makeBlob } from "./blob.ts";
import { gzip, tar } from "./tar.ts";

export const MEDIA = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  wasmContent: "application/vnd.module.wasm.content.layer.v1+wasm",
  wasmConfig: "application/vnd.module.wasm.config.v1+json",
} as const;

export const ANNOTATION = {
  source: "org.opencontainers.image.source",
  version: "org.opencontainers.image.version",
  revision: "org.opencontainers.image.revision",
  title: "org.opencontainers.image.title",
  refName: "org.opencontainers.image.ref.name",
  variant: "module.wasm.image/variant",
} as const;

/** The file name Istio looks for in a compat image's last layer. */
export const PLUGIN_FILE = "plugin.wasm";

export type ImageKind = "wasm" | "compat";

export interface ImageMetadata {
  title: string;
  version: string;
  revision: string;
  source: string;
}

export interface Image {
  kind: ImageKind;
  manifest: Blob;
  config: Blob;
  layers: Blob[];
}

/** Every blob the manifest points at, each once (the artifact's config is also one of its layers). */
export function imageBlobs(image: Image): Blob[] {
  const seen = new Map<string, Blob>();
  for (const blob of [image.config, ...image.layers]) seen.set(blob.descriptor.digest, blob);
  return [...seen.values()];
}

export interface ModuleInfo {
  /** The proxy-wasm ABI markers the module exports, e.g. "proxy_abi_version_0_2_1". */
  abiVersions: string[];
}

/** Compiles (not instantiates) the module: proves it is Wasm and reads its ABI markers. */
export function inspectModule(wasm: Buffer): ModuleInfo {
  let module: WebAssembly.Module;
  try {
    module = new WebAssembly.Module(new Uint8Array(wasm));
  } catch (err) {
    throw new Error(`not a valid WebAssembly module: ${(err as Error).message}`);
  }
  const abiVersions = WebAssembly.Module.exports(module)
    .map((e) => e.name)
    .filter((name) => /^proxy_abi_version_\d+_\d+_\d+$/.test(name))
    .sort();
  if (!abiVersions.length) throw new Error("the module exports no proxy_abi_version_* marker; is it a proxy-wasm module?");
  return { abiVersions };
}

function imageAnnotations(meta: ImageMetadata): Record<string, string> {
  return {
    [ANNOTATION.source]: meta.source,
    [ANNOTATION.version]: meta.version,
    [ANNOTATION.revision]: meta.revision,
    [ANNOTATION.title]: meta.title,
  };
}

function manifestBlob(config: Blob, layers: Blob[], annotations: Record<string, string>): Blob {
  const manifest = {
    schemaVersion: 2,
    // Istio tells Docker from OCI manifests by this field; without it an OCI image looks unknown.
    mediaType: MEDIA.ociManifest,
    config: config.descriptor,
    layers: layers.map((l) => l.descriptor),
    annotations,
  };
  return makeBlob(MEDIA.ociManifest, canonicalJson(manifest));
}

export function wasmArtifact(wasm: Buffer, meta: ImageMetadata): Image {
  const info = inspectModule(wasm);
  // The solo.io runtime config; root_ids is left out because a module can't be asked for them
  // without running it, and Istio takes the root id from the WasmPlugin's pluginName anyway.
  const runtimeConfig = canonicalJson({ type: "envoy_proxy", abiVersions: info.abiVersions, config: {} });
  const config = makeBlob(MEDIA.wasmConfig, runtimeConfig);
  const layers = [
    makeBlob(MEDIA.wasmContent, wasm, { [ANNOTATION.title]: PLUGIN_FILE }),
    makeBlob(MEDIA.wasmConfig, runtimeConfig, { [ANNOTATION.title]: "runtime-config.json" }),
  ];
  return { kind: "wasm", manifest: manifestBlob(config, layers, imageAnnotations(meta)), config, layers };
}

export function compatImage(wasm: Buffer, meta: ImageMetadata): Image {
  inspectModule(wasm);
  const archive = tar([{ name: PLUGIN_FILE, data: wasm }]);
  const layer = makeBlob(MEDIA.ociLayerGzip, gzip(archive));
  // os/architecture as Docker's Wasm support spells them; Istio ignores the platform of a
  // single manifest, and claiming linux/amd64 would be false.
  const imageConfig = {
    architecture: "wasm",
    os: "wasi",
    config: { Labels: imageAnnotations(meta) },
    rootfs: { type: "layers", diff_ids: [makeBlob("", archive).descriptor.digest] },
  };
  const config = makeBlob(MEDIA.ociConfig, canonicalJson(imageConfig));
  const annotations = { ...imageAnnotations(meta), [ANNOTATION.variant]: "compat" };
  return { kind: "compat", manifest: manifestBlob(config, [layer], annotations), config, layers: [layer] };
}

export function buildImages(wasm: Buffer, meta: ImageMetadata): Image[] {
  return [wasmArtifact(wasm, meta), compatImage(wasm, meta)];
}

export function parseManifest(bytes: Buffer): { mediaType?: string; config: Descriptor; layers: Descriptor[]; annotations?: Record<string, string> } {
  const m = JSON.parse(bytes.toString("utf8"));
  if (m?.schemaVersion !== 2 || !m.config || !Array.isArray(m.layers)) throw new Error("not an image manifest (schemaVersion 2 with config and layers)");
  return m;
}
