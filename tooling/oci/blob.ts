// Content-addressed pieces of an OCI image: digests, descriptors and the canonical JSON that
// makes a manifest's digest depend only on its content.
import { createHash } from "node:crypto";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** Bytes together with the descriptor that names them. */
export interface Blob {
  descriptor: Descriptor;
  bytes: Buffer;
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

export function hexOf(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new Error(`not a sha256 digest: ${digest}`);
  return m[1];
}

export function makeBlob(mediaType: string, bytes: Buffer, annotations?: Record<string, string>): Blob {
  const descriptor: Descriptor = { mediaType, digest: sha256Digest(bytes), size: bytes.length };
  if (annotations && Object.keys(annotations).length) descriptor.annotations = annotations;
  return { descriptor, bytes };
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/**
 * JSON with keys sorted at every level and no whitespace. Manifests are hashed as bytes, so the
 * order in which code happened to build an object must not leak into the digest.
 */
export function canonicalJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(sortKeys(value)), "utf8");
}
