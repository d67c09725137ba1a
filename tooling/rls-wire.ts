// The protobuf wire form of envoy.service.ratelimit.v3 ShouldRateLimit, written by hand for the tests:
// an encoder and decoder independent of assembly/ratelimit/, so that the filter's bytes are checked
// against a second implementation and against the real service, not against themselves.
// Field numbers as in go-control-plane's generated rls.pb.go and ratelimit.pb.go (see
// assembly/ratelimit/proto.ts for the table).

export type Unit = "SECOND" | "MINUTE" | "HOUR" | "DAY" | "MONTH" | "YEAR" | "WEEK";
export const UNITS: Record<Unit, number> = { SECOND: 1, MINUTE: 2, HOUR: 3, DAY: 4, MONTH: 5, YEAR: 6, WEEK: 7 };
export type Code = "UNKNOWN" | "OK" | "OVER_LIMIT";
const CODES: Code[] = ["UNKNOWN", "OK", "OVER_LIMIT"];

export interface Descriptor {
  entries: [key: string, value: string][];
  /** The descriptor's own limit (RateLimitOverride): the service then needs no rule for it. */
  limit?: { requestsPerUnit: number; unit: Unit };
  /** Per-descriptor hits (google.protobuf.UInt64Value); 0 is sent and means "look, don't count". */
  hitsAddend?: number;
}

export interface RateLimitRequest {
  domain: string;
  descriptors: Descriptor[];
  /** Request-wide hits, for descriptors without their own; the service reads 0 as 1. */
  hitsAddend?: number;
}

export interface DescriptorStatus {
  code: Code;
  currentLimit?: { requestsPerUnit: number; unit: number; name: string };
  limitRemaining: number;
  /** Absent when the descriptor had no limit; seconds + nanos otherwise. */
  durationUntilReset?: { seconds: number; nanos: number };
}

export interface RateLimitResponse {
  overallCode: Code;
  statuses: DescriptorStatus[];
}

function varint(n: number | bigint): number[] {
  let v = BigInt(n);
  if (v < 0n) v = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

function tag(field: number, wire: 0 | 2): number[] {
  return varint((field << 3) | wire);
}

function bytesField(field: number, body: Uint8Array | number[]): number[] {
  return [...tag(field, 2), ...varint(body.length), ...body];
}

function stringField(field: number, s: string): number[] {
  return bytesField(field, Buffer.from(s, "utf8"));
}

function varintField(field: number, n: number): number[] {
  return n === 0 ? [] : [...tag(field, 0), ...varint(n)];
}

export function encodeRequest(request: RateLimitRequest): Buffer {
  const out = stringField(1, request.domain);
  for (const d of request.descriptors) {
    const body: number[] = [];
    for (const [key, value] of d.entries) body.push(...bytesField(1, [...stringField(1, key), ...stringField(2, value)]));
    if (d.limit) body.push(...bytesField(2, [...varintField(1, d.limit.requestsPerUnit), ...varintField(2, UNITS[d.limit.unit])]));
    // A wrapper's presence is the point: an empty UInt64Value is hits_addend = 0, not "unset".
    if (d.hitsAddend !== undefined) body.push(...bytesField(3, varintField(1, d.hitsAddend)));
    out.push(...bytesField(2, body));
  }
  out.push(...varintField(3, request.hitsAddend ?? 0));
  return Buffer.from(out);
}

interface Field {
  field: number;
  varint?: bigint;
  bytes?: Buffer;
}

/** Splits one message into its fields; throws on anything malformed (a test wants to know). */
export function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let i = 0;
  const readVarint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (i >= buf.length || shift > 63n) throw new Error(`bad varint at ${i}`);
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < buf.length) {
    const key = Number(readVarint());
    const field = key >>> 3;
    switch (key & 7) {
      case 0:
        out.push({ field, varint: readVarint() });
        break;
      case 2: {
        const len = Number(readVarint());
        if (i + len > buf.length) throw new Error(`field ${field} runs past the end`);
        out.push({ field, bytes: buf.subarray(i, i + len) });
        i += len;
        break;
      }
      case 1:
        i += 8;
        break;
      case 5:
        i += 4;
        break;
      default:
        throw new Error(`wire type ${key & 7} at ${i}`);
    }
  }
  return out;
}

function decodeStatus(buf: Buffer): DescriptorStatus {
  const status: DescriptorStatus = { code: "UNKNOWN", limitRemaining: 0 };
  for (const f of fields(buf)) {
    if (f.field === 1 && f.varint !== undefined) status.code = CODES[Number(f.varint)] ?? "UNKNOWN";
    else if (f.field === 2 && f.bytes) {
      const limit = { requestsPerUnit: 0, unit: 0, name: "" };
      for (const g of fields(f.bytes)) {
        if (g.field === 1 && g.varint !== undefined) limit.requestsPerUnit = Number(g.varint);
        else if (g.field === 2 && g.varint !== undefined) limit.unit = Number(g.varint);
        else if (g.field === 3 && g.bytes) limit.name = g.bytes.toString("utf8");
      }
      status.currentLimit = limit;
    } else if (f.field === 3 && f.varint !== undefined) status.limitRemaining = Number(f.varint);
    else if (f.field === 4 && f.bytes) {
      const d = { seconds: 0, nanos: 0 };
      for (const g of fields(f.bytes)) {
        if (g.field === 1 && g.varint !== undefined) d.seconds = Number(BigInt.asIntN(64, g.varint));
        else if (g.field === 2 && g.varint !== undefined) d.nanos = Number(BigInt.asIntN(32, g.varint));
      }
      status.durationUntilReset = d;
    }
  }
  return status;
}

export function decodeResponse(buf: Buffer): RateLimitResponse {
  const response: RateLimitResponse = { overallCode: "UNKNOWN", statuses: [] };
  for (const f of fields(buf)) {
    if (f.field === 1 && f.varint !== undefined) response.overallCode = CODES[Number(f.varint)] ?? "UNKNOWN";
    else if (f.field === 2 && f.bytes) response.statuses.push(decodeStatus(f.bytes));
  }
  return response;
}

/** A ShouldRateLimit request as a service reads it (the in-memory tests' stand-in service). */
export function decodeRequest(buf: Buffer): RateLimitRequest {
  const request: RateLimitRequest = { domain: "", descriptors: [] };
  for (const f of fields(buf)) {
    if (f.field === 1 && f.bytes) request.domain = f.bytes.toString("utf8");
    else if (f.field === 3 && f.varint !== undefined) request.hitsAddend = Number(f.varint);
    else if (f.field === 2 && f.bytes) {
      const d: Descriptor = { entries: [] };
      for (const g of fields(f.bytes)) {
        if (g.field === 1 && g.bytes) {
          let key = "";
          let value = "";
          for (const e of fields(g.bytes)) {
            if (e.field === 1 && e.bytes) key = e.bytes.toString("utf8");
            else if (e.field === 2 && e.bytes) value = e.bytes.toString("utf8");
          }
          d.entries.push([key, value]);
        } else if (g.field === 2 && g.bytes) {
          const limit = { requestsPerUnit: 0, unit: "SECOND" as Unit };
          for (const l of fields(g.bytes)) {
            if (l.field === 1 && l.varint !== undefined) limit.requestsPerUnit = Number(l.varint);
            else if (l.field === 2 && l.varint !== undefined) limit.unit = (Object.keys(UNITS) as Unit[]).find((u) => UNITS[u] === Number(l.varint)) ?? "SECOND";
          }
          d.limit = limit;
        } else if (g.field === 3 && g.bytes) {
          d.hitsAddend = 0;
          for (const h of fields(g.bytes)) if (h.field === 1 && h.varint !== undefined) d.hitsAddend = Number(h.varint);
        }
      }
      request.descriptors.push(d);
    }
  }
  return request;
}

/** A RateLimitResponse as a service writes it. */
export function encodeResponse(response: RateLimitResponse): Buffer {
  const out = varintField(1, CODES.indexOf(response.overallCode));
  for (const s of response.statuses) {
    const body = [...varintField(1, CODES.indexOf(s.code))];
    if (s.currentLimit) body.push(...bytesField(2, [...varintField(1, s.currentLimit.requestsPerUnit), ...varintField(2, s.currentLimit.unit)]));
    body.push(...varintField(3, s.limitRemaining));
    if (s.durationUntilReset) body.push(...bytesField(4, [...varintField(1, s.durationUntilReset.seconds), ...varintField(2, s.durationUntilReset.nanos)]));
    out.push(...bytesField(2, body));
  }
  return Buffer.from(out);
}
