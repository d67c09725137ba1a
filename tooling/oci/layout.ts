// OCI image layouts (image-spec "image-layout.md") on disk: one directory per filter holding both
// of its images, told apart by org.opencontainers.image.ref.name "wasm" and "compat" in index.json.
// `skopeo copy oci:build/oci/admission:wasm docker://...` reads them as they are.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Blob, canonicalJson, type Descriptor, hexOf, sha256Digest } from "./blob.ts";
import { ANNOTATION, type Image, imageBlobs, type ImageKind, MEDIA, parseManifest } from "./image.ts";

export interface LayoutImage {
  kind: ImageKind;
  manifest: Blob;
  /** Config and layers, each once, read back and checked against their digests. */
  blobs: Blob[];
}

function blobPath(dir: string, digest: string): string {
  return join(dir, "blobs", "sha256", hexOf(digest));
}

/** Replaces `dir` with a layout of `images`; a stale blob from an earlier build never lingers. */
export function writeLayout(dir: string, images: Image[]): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  for (const image of images) {
    for (const blob of [image.manifest, ...imageBlobs(image)]) writeFileSync(blobPath(dir, blob.descriptor.digest), blob.bytes);
  }
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA.ociIndex,
    manifests: images.map((image) => ({ ...image.manifest.descriptor, annotations: { [ANNOTATION.refName]: image.kind } })),
  };
  writeFileSync(join(dir, "index.json"), canonicalJson(index));
  writeFileSync(join(dir, "oci-layout"), canonicalJson({ imageLayoutVersion: "1.0.0" }));
}

function readBlob(dir: string, descriptor: Descriptor): Blob {
  const path = blobPath(dir, descriptor.digest);
  if (!existsSync(path)) throw new Error(`${dir}: blob ${descriptor.digest} is missing`);
  const bytes = readFileSync(path);
  if (sha256Digest(bytes) !== descriptor.digest || bytes.length !== descriptor.size) {
    throw new Error(`${dir}: blob ${descriptor.digest} does not match its digest or size; run \`npm run package\` again`);
  }
  return { descriptor, bytes };
}

export function readLayout(dir: string): LayoutImage[] {
  const indexPath = join(dir, "index.json");
  if (!existsSync(indexPath)) throw new Error(`${dir} is not an OCI image layout (no index.json)`);
  const index = JSON.parse(readFileSync(indexPath, "utf8"));
  return (index.manifests as Descriptor[]).map((entry) => {
    const kind = entry.annotations?.[ANNOTATION.refName];
    if (kind !== "wasm" && kind !== "compat") throw new Error(`${dir}: index.json entry ${entry.digest} has ref name ${kind}, expected wasm or compat`);
    const manifest = readBlob(dir, { mediaType: entry.mediaType, digest: entry.digest, size: entry.size });
    const parsed = parseManifest(manifest.bytes);
    const seen = new Map<string, Blob>();
    for (const d of [parsed.config, ...parsed.layers]) seen.set(d.digest, readBlob(dir, d));
    return { kind, manifest, blobs: [...seen.values()] };
  });
}
