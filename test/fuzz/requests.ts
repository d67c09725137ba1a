// Whole HTTP/1.1 requests for the fuzz run: a body from bodies.ts in one of several framings
// (content-length on a kept-alive connection, tiny chunks in separate writes, gzip, lengths that
// lie, oversized and repeated headers, other methods and paths). Each request is a pure function
// of (seed, index), so a failure can be replayed alone.
import { gzipSync } from "node:zlib";
import { adversarial, ENDPOINTS, lit, type Shape, wellFormed } from "../../tooling/fuzz/bodies.ts";
import { Rng } from "../../tooling/fuzz/rng.ts";

export type Transport =
  /** One request on a kept-alive connection; it must be answered. */
  | "keepalive"
  /** On its own connection, which the framing may end (a response is optional). */
  | "oneshot"
  /** On its own connection, half-closed after the bytes (a body shorter than declared). */
  | "halfclose";

export interface FuzzRequest {
  index: number;
  kind: string;
  transport: Transport;
  writes: Buffer[];
  /** Send the writes as separate segments. */
  paced: boolean;
  path: string;
  shape: Shape | undefined;
  /** A readable preview for failure reports. */
  preview: string;
}

/** Headers only llm-mesh sets; a client sending them is forging them. */
export const FORGED = [
  ["x-llm-model", "gpt-4o"], ["x-llm-api", "openai.embeddings"], ["x-llm-prompt-tokens", "1"], ["x-llm-max-tokens", "1"],
  ["x-llm-stream", "false"], ["x-llm-route", "canary"],
] as const;

type Header = [string, string];

function requestHead(method: string, path: string, headers: Header[]): string {
  return `${method} ${path} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join("")}\r\n`;
}

function baseHeaders(rng: Rng): Header[] {
  const headers: Header[] = [["host", "llm.local"], ["content-type", "application/json"]];
  // "tight" and "queued" have small limits in the fuzz throttle config (tooling/fuzz/mesh.ts).
  headers.push(["x-tenant", rng.weighted([[30, "alpha"], [30, "beta"], [30, "gamma"], [4, "tight"], [1, "queued"]])]);
  if (rng.chance(0.05)) headers.push(rng.pick(FORGED) as unknown as Header);
  if (rng.chance(0.02)) headers.push(["x-user-id", `u${rng.int(1000)}`]);
  return headers;
}

/** Odd spellings of the LLM endpoints that servers may still route to them. */
function pathFor(rng: Rng, path: string): string {
  return rng.weighted([
    [90, path],
    [2, `${path}/`],
    [2, `${path}?api-version=2024-06-01`],
    [2, path.replace(/\/([a-z])([a-z]+)$/, (_m, first: string, rest: string) => `/%${first.charCodeAt(0).toString(16)}${rest}`)],
    [1, path.replace(/\/(?=[^/]+$)/, "%2F")],
    [1, `/${path}`],
    [1, path.toUpperCase()],
    [1, `/openai/deployments/x${path}`],
  ]);
}

function chunked(body: Buffer, rng: Rng): Buffer[] {
  // Frames of 1 to 16 bytes, grouped into a few writes so that segments split frames too.
  const frames: Buffer[] = [];
  for (let at = 0; at < body.length; ) {
    const size = Math.min(body.length - at, rng.range(1, 16));
    frames.push(Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), body.subarray(at, at + size), Buffer.from("\r\n")]));
    at += size;
  }
  frames.push(Buffer.from("0\r\n\r\n"));
  const all = Buffer.concat(frames);
  const writes: Buffer[] = [];
  const pieces = Math.min(12, Math.max(1, Math.ceil(all.length / 7)));
  for (let i = 0, at = 0; i < pieces; i++) {
    const end = i === pieces - 1 ? all.length : Math.min(all.length, at + rng.range(1, Math.ceil((2 * all.length) / pieces)));
    if (end > at) writes.push(all.subarray(at, end));
    at = end;
  }
  return writes;
}

function preview(bytes: Buffer): string {
  const text = bytes.toString("latin1");
  return JSON.stringify(text.length > 240 ? `${text.slice(0, 240)}…(${bytes.length} bytes)` : text);
}

export function fuzzRequest(seed: number, index: number): FuzzRequest {
  const rng = new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  const { path: endpoint, shape } = rng.pick(ENDPOINTS);
  const body = rng.chance(0.35) ? wellFormed(rng, shape) : adversarial(rng, shape);
  const headers = baseHeaders(rng);
  const framing = rng.weighted<string>([
    [82, "content-length"], [5, "chunked"], [2, "gzip"], [1, "encoding-lie"], [1, "cl-long"], [1, "cl-short"], [0.4, "headers-huge"],
    [0.4, "headers-many"], [0.5, "cl-twice"], [0.4, "cl-and-te"], [1.5, "headers-repeated"], [1, "method"], [0.5, "no-body"], [0.3, "expect"],
  ]);
  const path = pathFor(rng, endpoint);
  const request = (transport: Transport, kind: string, writes: Buffer[], paced = false): FuzzRequest => ({
    index, kind: `${framing}/${kind}`, transport, writes, paced, path, shape, preview: `${framing} ${path} ${preview(Buffer.concat(writes))}`,
  });
  const bytes = body.bytes;
  const withLength = (extra: Header[], length = bytes.length, method = "POST") =>
    Buffer.from(requestHead(method, path, [...headers, ...extra, ["content-length", String(length)]]));

  switch (framing) {
    case "chunked":
      return request("keepalive", body.kind, [Buffer.from(requestHead("POST", path, [...headers, ["transfer-encoding", "chunked"]])), ...chunked(bytes, rng)], true);
    case "gzip": {
      const packed = gzipSync(bytes);
      return request("keepalive", body.kind, [withLength([["content-encoding", rng.pick(["gzip", "GZIP", "x-gzip", "gzip, identity"])]], packed.length), packed]);
    }
    case "encoding-lie":
      // Plain JSON labelled compressed: the server would decompress (and fail) or read it otherwise.
      return request("keepalive", body.kind, [withLength([["content-encoding", rng.pick(["gzip", "br", "deflate", "zstd", "identity, gzip"])]]), bytes]);
    case "cl-long":
      return request("halfclose", body.kind, [withLength([], bytes.length + rng.range(1, 100)), bytes]);
    case "cl-short":
      return request("oneshot", body.kind, [withLength([], Math.max(0, bytes.length - rng.range(1, 30))), bytes]);
    case "headers-huge":
      return request("oneshot", body.kind, [withLength([["x-padding", "p".repeat(rng.range(61, 120) * 1024)]]), bytes]);
    case "headers-many": {
      const many: Header[] = Array.from({ length: rng.range(101, 300) }, (_, i) => [`x-h${i}`, "v"]);
      return request("oneshot", body.kind, [withLength(many), bytes]);
    }
    case "cl-twice":
      return request("oneshot", body.kind, [Buffer.from(requestHead("POST", path, [...headers, ["content-length", String(bytes.length)], ["content-length", String(rng.chance(0.5) ? bytes.length : bytes.length + 5)]])), bytes]);
    case "cl-and-te":
      return request("oneshot", body.kind, [Buffer.from(requestHead("POST", path, [...headers, ["content-length", String(bytes.length)], ["transfer-encoding", "chunked"]])), bytes]);
    case "headers-repeated": {
      const repeated: Header[] = rng.pick([
        [["x-tenant", "alpha"], ["x-tenant", "tight"]],
        [["content-type", "text/plain"]],
        [["x-llm-model", "gpt-4o"], ["x-llm-model", "evil"], ["x-llm-route", "canary"], ["x-llm-route", "primary"]],
        [["x-llm-prompt-tokens", "1"], ["x-llm-prompt-tokens", "2"], ["x-llm-max-tokens", "0"]],
        [["content-encoding", "identity"], ["content-encoding", "gzip"]],
        [["content-encoding", "identity"]],
        [["x-padding", "q".repeat(8000)], ["x-padding", "r".repeat(8000)]],
        [["host", "other.local"]],
      ] as Header[][]);
      return request("keepalive", body.kind, [withLength(repeated), bytes]);
    }
    case "method": {
      const method = rng.pick(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]);
      return request("keepalive", `${method} ${body.kind}`, [withLength([], bytes.length, method), bytes]);
    }
    case "no-body":
      return request("keepalive", "empty", [withLength([], 0)]);
    case "expect":
      return request("keepalive", body.kind, [withLength([["expect", "100-continue"]]), bytes]);
    default:
      return request("keepalive", body.kind, [withLength([]), bytes]);
  }
}

/** A small valid chat body, for tests that need one. */
export function simpleChat(model = "gpt-4o", extra: Record<string, unknown> = {}): string {
  return `{"model":${lit(model)},"messages":[{"role":"user","content":"hello"}]${Object.entries(extra).map(([k, v]) => `,${lit(k)}:${lit(v)}`).join("")}}`;
}
