import { ProtoReader, ProtoWriter, varintSize } from "../ratelimit/proto";
import {
  decodeRateLimitResponse,
  encodeGrpcService,
  encodeRateLimitRequest,
  MAX_STATUSES,
  RateLimitCode,
  RateLimitDescriptor,
  RateLimitResponse,
  RateLimitUnit,
} from "../ratelimit/rls";
import { REQUEST_HEX, RESPONSE_FIRST_HEX, RESPONSE_SECOND_HEX } from "./ratelimit-wire";

function hex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += (<u32>bytes[i]).toString(16).padStart(2, "0");
  return out;
}

function unhex(text: string): Uint8Array {
  const out = new Uint8Array(text.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = <u8>U32.parseInt(text.substr(i * 2, 2), 16);
  return out;
}

function fixtureDescriptors(): RateLimitDescriptor[] {
  return [
    new RateLimitDescriptor(1000, RateLimitUnit.Hour, 600).entry("tenant", "wire").entry("limit", "tokens"),
    new RateLimitDescriptor(100, RateLimitUnit.Minute, 1).entry("tenant", "wire").entry("city", "zürich"),
  ];
}

function expectStatus(response: RateLimitResponse, i: i32, code: RateLimitCode, limit: u32, unit: RateLimitUnit, remaining: u32, reset: i64): void {
  const s = response.statuses[i];
  expect(s.code).toBe(code);
  expect(s.hasLimit).toBe(true);
  expect(s.requestsPerUnit).toBe(limit);
  expect(s.unit).toBe(<u32>unit);
  expect(s.limitRemaining).toBe(remaining);
  expect(s.resetSeconds).toBe(reset);
}

/** A deterministic byte stream for the fuzz loops (xorshift32). */
class Bytes {
  constructor(private state: u32) {}

  next(): u8 {
    let x = this.state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    this.state = x;
    return <u8>x;
  }
}

describe("encodeRateLimitRequest", () => {
  it("writes the bytes the real service accepted (ratelimit-wire.ts)", () => {
    expect(hex(encodeRateLimitRequest("llm-mesh-test", fixtureDescriptors(), 0))).toBe(REQUEST_HEX);
  });

  it("sends hits 0 as a present, empty UInt64Value: look without counting", () => {
    const bytes = encodeRateLimitRequest("d", [new RateLimitDescriptor(5, RateLimitUnit.Second, 0).entry("k", "v")], 0);
    // domain; descriptor { entry {k, v}, limit {5, SECOND}, hits_addend {} }
    expect(hex(bytes)).toBe("0a0164" + "1210" + "0a060a016b120176" + "120408051001" + "1a00");
  });

  it("adds the request-wide hits_addend only when asked", () => {
    const with7 = encodeRateLimitRequest("d", [new RateLimitDescriptor(5, RateLimitUnit.Day, 7).entry("k", "v")], 7);
    expect(hex(with7).endsWith("1a0208071807")).toBe(true);
  });

  it("writes long strings and large numbers with multi-byte varints", () => {
    const long = "x".repeat(300);
    const bytes = encodeRateLimitRequest(long, [new RateLimitDescriptor(u32.MAX_VALUE, RateLimitUnit.Week, u64.MAX_VALUE).entry(long, "")], 0);
    const r = ProtoReader.of(bytes);
    expect(r.next()).toBe(true);
    expect(r.field).toBe(1);
    expect(r.text()).toBe(long);
    expect(r.next()).toBe(true);
    const d = r.message();
    expect(d.failed).toBe(false);
    let fields = 0;
    while (d.next()) {
      fields++;
      if (d.field == 3) {
        const hits = d.message();
        expect(hits.next()).toBe(true);
        expect(hits.varintField()).toBe(u64.MAX_VALUE);
      } else d.skip();
    }
    expect(d.failed).toBe(false);
    expect(fields).toBe(3);
    expect(r.next()).toBe(false);
    expect(r.failed).toBe(false);
  });
});

describe("encodeGrpcService", () => {
  it("names the cluster inside envoy_grpc, with an authority only when given", () => {
    expect(hex(Uint8Array.wrap(encodeGrpcService("rls", "")))).toBe("0a050a03726c73");
    expect(hex(Uint8Array.wrap(encodeGrpcService("rls", "a.b")))).toBe("0a0a0a03726c731203612e62");
  });
});

describe("decodeRateLimitResponse", () => {
  it("reads the service's OK answer", () => {
    const r = decodeRateLimitResponse(unhex(RESPONSE_FIRST_HEX));
    expect(r.valid).toBe(true);
    expect(r.overallCode).toBe(RateLimitCode.Ok);
    expect(r.statuses.length).toBe(2);
    expectStatus(r, 0, RateLimitCode.Ok, 1000, RateLimitUnit.Hour, 400, 2940);
    expectStatus(r, 1, RateLimitCode.Ok, 100, RateLimitUnit.Minute, 99, 60);
  });

  it("reads the service's OVER_LIMIT answer, which has no limit_remaining", () => {
    const r = decodeRateLimitResponse(unhex(RESPONSE_SECOND_HEX));
    expect(r.valid).toBe(true);
    expect(r.overallCode).toBe(RateLimitCode.OverLimit);
    expectStatus(r, 0, RateLimitCode.OverLimit, 1000, RateLimitUnit.Hour, 0, 2940);
    expectStatus(r, 1, RateLimitCode.Ok, 100, RateLimitUnit.Minute, 98, 60);
  });

  it("reads a status without a limit (a domain the service lacks) as such", () => {
    const r = decodeRateLimitResponse(unhex("080112020801"));
    expect(r.valid).toBe(true);
    expect(r.statuses.length).toBe(1);
    expect(r.statuses[0].code).toBe(RateLimitCode.Ok);
    expect(r.statuses[0].hasLimit).toBe(false);
    expect(r.statuses[0].resetSeconds).toBe(-1);
  });

  it("passes over fields it does not read, of every wire type", () => {
    // response_headers_to_add (3, bytes), an unknown fixed64 (9) and fixed32 (10), then overall_code.
    const r = decodeRateLimitResponse(unhex("1a020a00" + "490102030405060708" + "5501020304" + "0802"));
    expect(r.valid).toBe(true);
    expect(r.overallCode).toBe(RateLimitCode.OverLimit);
  });

  it("refuses malformed bytes without trapping", () => {
    const cases = [
      "08", // a varint cut short
      "12", // a length missing
      "1205080112", // a status longer than what is left
      "0b", // a group (wire type 3)
      "0f", // wire type 7
      "00", // field 0
      "08ffffffffffffffffffff01", // a varint of eleven bytes
      "1202" + "1201", // current_limit whose length runs past the status
      "0a0101", // overall_code sent as bytes
    ];
    for (let i = 0; i < cases.length; i++) expect(decodeRateLimitResponse(unhex(cases[i])).valid).toBe(false);
  });

  it("stops at MAX_STATUSES statuses", () => {
    let many = "";
    for (let i = 0; i <= MAX_STATUSES; i++) many += "12020801";
    expect(decodeRateLimitResponse(unhex(many)).valid).toBe(false);
  });

  it("survives every truncation and random corruption of a real answer", () => {
    const real = unhex(RESPONSE_SECOND_HEX);
    for (let n = 0; n < real.length; n++) decodeRateLimitResponse(real.subarray(0, n));
    const rand = new Bytes(12345);
    for (let round = 0; round < 2000; round++) {
      const bytes = real.slice();
      const flips = 1 + (rand.next() & 3);
      for (let f = 0; f < flips; f++) bytes[rand.next() % bytes.length] = rand.next();
      decodeRateLimitResponse(bytes);
      const noise = new Uint8Array(rand.next() & 63);
      for (let i = 0; i < noise.length; i++) noise[i] = rand.next();
      decodeRateLimitResponse(noise);
    }
    expect(decodeRateLimitResponse(real).valid).toBe(true);
  });
});

describe("ProtoWriter", () => {
  it("sizes varints as it writes them", () => {
    const values: u64[] = [0, 127, 128, 16383, 16384, u32.MAX_VALUE, u64.MAX_VALUE];
    for (let i = 0; i < values.length; i++) {
      const w = new ProtoWriter(varintSize(values[i]));
      w.varint(values[i]);
      expect(w.complete).toBe(true);
      const r = new ProtoReader(w.bytes, 0, w.bytes.length);
      expect(r.varint()).toBe(values[i]);
    }
  });

  it("never writes past a buffer sized too small", () => {
    const w = new ProtoWriter(3);
    w.stringField(1, "too long", 8);
    w.varint(300);
    expect(w.complete).toBe(false);
    expect(w.bytes.length).toBe(3);
  });
});
