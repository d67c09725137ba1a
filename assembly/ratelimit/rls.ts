// Envoy's rate limit service protocol (envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit)
// as llm-mesh speaks it: every descriptor carries its own limit and hits, so the service's config
// needs only the domain (tooling/ratelimit.ts records what envoyproxy/ratelimit does with them).
//
// Field numbers, from go-control-plane's generated code (envoy v1.32.4, the version
// envoyproxy/ratelimit builds with: service/ratelimit/v3/rls.pb.go, extensions/common/ratelimit/v3/
// ratelimit.pb.go, config/core/v3/grpc_service.pb.go):
//   RateLimitRequest      domain=1 string, descriptors=2 repeated RateLimitDescriptor, hits_addend=3 uint32
//   RateLimitDescriptor   entries=1 repeated Entry {key=1 string, value=2 string},
//                         limit=2 RateLimitOverride {requests_per_unit=1 uint32, unit=2 enum},
//                         hits_addend=3 google.protobuf.UInt64Value {value=1 uint64}
//   RateLimitResponse     overall_code=1 enum, statuses=2 repeated DescriptorStatus,
//                         response_headers_to_add=3, request_headers_to_add=4, raw_body=5,
//                         dynamic_metadata=6, quota=7 (none of which llm-mesh reads)
//   DescriptorStatus      code=1 enum, current_limit=2 RateLimit {requests_per_unit=1, unit=2, name=3},
//                         limit_remaining=3 uint32, duration_until_reset=4 Duration {seconds=1 int64,
//                         nanos=2 int32}, quota=5
//   Code                  UNKNOWN=0, OK=1, OVER_LIMIT=2
//   Unit                  UNKNOWN=0, SECOND=1, MINUTE=2, HOUR=3, DAY=4, MONTH=5, YEAR=6, WEEK=7
//   GrpcService           envoy_grpc=1 EnvoyGrpc {cluster_name=1 string, authority=2 string}
import { bytesFieldSize, ProtoReader, ProtoWriter, varintFieldSize } from "./proto";

export const RATE_LIMIT_SERVICE = "envoy.service.ratelimit.v3.RateLimitService";
export const SHOULD_RATE_LIMIT = "ShouldRateLimit";

/**
 * A limit's window. The reference service's windows are fixed and aligned to the epoch (a month is
 * 30 days, a year 365); UNKNOWN (0) is not offered: the reference service crashes on it.
 */
export enum RateLimitUnit {
  Second = 1,
  Minute = 2,
  Hour = 3,
  Day = 4,
  Month = 5,
  Year = 6,
  Week = 7,
}

export enum RateLimitCode {
  Unknown = 0,
  Ok = 1,
  OverLimit = 2,
}

/** One counter to charge: its key (entries), its limit and the hits to add. */
export class RateLimitDescriptor {
  keys: string[] = [];
  values: string[] = [];

  /** hits 0 asks without counting (the service sends the UInt64Value even then: presence is the point). */
  constructor(public requestsPerUnit: u32, public unit: RateLimitUnit, public hits: u64) {}

  entry(key: string, value: string): RateLimitDescriptor {
    this.keys.push(key);
    this.values.push(value);
    return this;
  }
}

function entrySize(keySize: i32, valueSize: i32): i32 {
  return bytesFieldSize(1, keySize) + bytesFieldSize(2, valueSize);
}

function limitSize(d: RateLimitDescriptor): i32 {
  return varintFieldSize(1, <u64>d.requestsPerUnit) + varintFieldSize(2, <u64>d.unit);
}

/**
 * The serialized RateLimitRequest for `domain` and `descriptors`. `requestHits`, when not 0, is also
 * sent as the request-wide hits_addend: the reference service prefers each descriptor's own, while
 * other services (Limitador) read only the request-wide one, which fits when every descriptor of
 * the request adds the same hits.
 */
export function encodeRateLimitRequest(domain: string, descriptors: RateLimitDescriptor[], requestHits: u32): Uint8Array {
  // Sizing pass: a nested message's length comes before it, so every size is known before writing.
  const n = descriptors.length;
  const utf8Sizes = new Array<i32>();
  const descriptorSizes = new StaticArray<i32>(n);
  for (let i = 0; i < n; i++) {
    const d = unchecked(descriptors[i]);
    let size = 0;
    const entries = min(d.keys.length, d.values.length);
    for (let j = 0; j < entries; j++) {
      const keySize = String.UTF8.byteLength(unchecked(d.keys[j]));
      const valueSize = String.UTF8.byteLength(unchecked(d.values[j]));
      utf8Sizes.push(keySize);
      utf8Sizes.push(valueSize);
      size += bytesFieldSize(1, entrySize(keySize, valueSize));
    }
    size += bytesFieldSize(2, limitSize(d));
    size += bytesFieldSize(3, varintFieldSize(1, d.hits));
    unchecked((descriptorSizes[i] = size));
  }
  const domainSize = String.UTF8.byteLength(domain);
  let total = bytesFieldSize(1, domainSize) + varintFieldSize(3, <u64>requestHits);
  for (let i = 0; i < n; i++) total += bytesFieldSize(2, unchecked(descriptorSizes[i]));

  const w = new ProtoWriter(total);
  w.stringField(1, domain, domainSize);
  let sizeAt = 0;
  for (let i = 0; i < n; i++) {
    const d = unchecked(descriptors[i]);
    w.beginBytes(2, unchecked(descriptorSizes[i]));
    const entries = min(d.keys.length, d.values.length);
    for (let j = 0; j < entries; j++) {
      const keySize = unchecked(utf8Sizes[sizeAt++]);
      const valueSize = unchecked(utf8Sizes[sizeAt++]);
      w.beginBytes(1, entrySize(keySize, valueSize));
      w.stringField(1, unchecked(d.keys[j]), keySize);
      w.stringField(2, unchecked(d.values[j]), valueSize);
    }
    w.beginBytes(2, limitSize(d));
    w.varintField(1, <u64>d.requestsPerUnit);
    w.varintField(2, <u64>d.unit);
    w.beginBytes(3, varintFieldSize(1, d.hits));
    w.varintField(1, d.hits);
  }
  w.varintField(3, <u64>requestHits);
  return w.bytes;
}

/**
 * The `service` argument of proxy_grpc_call for an Envoy cluster: a serialized GrpcService. An empty
 * `authority` leaves Envoy's default, the cluster name.
 */
export function encodeGrpcService(cluster: string, authority: string): ArrayBuffer {
  const clusterSize = String.UTF8.byteLength(cluster);
  const authoritySize = String.UTF8.byteLength(authority);
  const envoyGrpcSize = bytesFieldSize(1, clusterSize) + (authoritySize > 0 ? bytesFieldSize(2, authoritySize) : 0);
  const w = new ProtoWriter(bytesFieldSize(1, envoyGrpcSize));
  w.beginBytes(1, envoyGrpcSize);
  w.stringField(1, cluster, clusterSize);
  if (authoritySize > 0) w.stringField(2, authority, authoritySize);
  return w.bytes.buffer;
}

/** One descriptor's verdict, in the order the request listed them. */
export class DescriptorStatus {
  code: RateLimitCode = RateLimitCode.Unknown;
  /** False when the service applied no limit (a domain it lacks answers so): see tooling/ratelimit.ts. */
  hasLimit: bool = false;
  requestsPerUnit: u32 = 0;
  unit: u32 = 0;
  /** 0 in an OVER_LIMIT answer. */
  limitRemaining: u32 = 0;
  /** Whole seconds until the window ends; -1 when the answer had no duration_until_reset. */
  resetSeconds: i64 = -1;
}

export class RateLimitResponse {
  /** False when the bytes were not a RateLimitResponse: nothing else here is meaningful then. */
  valid: bool = true;
  overallCode: RateLimitCode = RateLimitCode.Unknown;
  statuses: DescriptorStatus[] = [];
}

/** More statuses than llm-mesh ever asks for in one request: a bound on what an answer can make us allocate. */
export const MAX_STATUSES = 16;

function codeOf(value: u64): RateLimitCode {
  return value == 1 ? RateLimitCode.Ok : value == 2 ? RateLimitCode.OverLimit : RateLimitCode.Unknown;
}

function readLimit(r: ProtoReader, status: DescriptorStatus): bool {
  status.hasLimit = true;
  while (r.next()) {
    if (r.field == 1) status.requestsPerUnit = <u32>r.varintField();
    else if (r.field == 2) status.unit = <u32>r.varintField();
    else r.skip();
  }
  return !r.failed;
}

function readDuration(r: ProtoReader, status: DescriptorStatus): bool {
  let seconds: i64 = 0;
  while (r.next()) {
    if (r.field == 1) seconds = <i64>r.varintField();
    else r.skip();
  }
  // Nanos are left out: the reference service sends none, and a retry in whole seconds is what
  // Retry-After can say anyway. A negative duration would be a broken answer.
  status.resetSeconds = seconds < 0 ? 0 : seconds;
  return !r.failed;
}

function readStatus(r: ProtoReader): DescriptorStatus | null {
  const status = new DescriptorStatus();
  while (r.next()) {
    if (r.field == 1) status.code = codeOf(r.varintField());
    else if (r.field == 2) {
      if (!readLimit(r.message(), status)) return null;
    } else if (r.field == 3) status.limitRemaining = <u32>r.varintField();
    else if (r.field == 4) {
      if (!readDuration(r.message(), status)) return null;
    } else r.skip();
  }
  return r.failed ? null : status;
}

/** Decodes a ShouldRateLimit answer; never traps, whatever the bytes: `valid` says whether they made sense. */
export function decodeRateLimitResponse(bytes: Uint8Array): RateLimitResponse {
  const response = new RateLimitResponse();
  const r = ProtoReader.of(bytes);
  while (r.next()) {
    if (r.field == 1) response.overallCode = codeOf(r.varintField());
    else if (r.field == 2) {
      const status = response.statuses.length < MAX_STATUSES ? readStatus(r.message()) : null;
      if (status == null) {
        response.valid = false;
        return response;
      }
      response.statuses.push(status);
    } else r.skip();
  }
  response.valid = !r.failed;
  return response;
}
