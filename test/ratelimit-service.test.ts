// The protocol facts llm-mesh's cluster-wide budgets rely on, asked of the real envoyproxy/ratelimit
// with Redis (scripts/setup-ratelimit.sh builds it; a missing binary fails here, it is never skipped).
// The service's config holds only the domain: every limit travels in the request, as the throttle
// sends it. See the FINDINGS in tooling/ratelimit.ts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { repoDir } from "../tooling/envoy-bin.ts";
import { counterKey, type Redis, type RateLimitService, shouldRateLimit, startRateLimitService, startRedis } from "../tooling/ratelimit.ts";
import { decodeResponse, type Descriptor, encodeRequest, type RateLimitResponse } from "../tooling/rls-wire.ts";

/** The bytes assembly/__tests__/ratelimit.spec.ts checks the filter's encoder and decoder against. */
const WIRE = Object.fromEntries(
  [...readFileSync(join(repoDir, "assembly", "__tests__", "ratelimit-wire.ts"), "utf8").matchAll(/^export const (\w+) = "([0-9a-f]+)";$/gm)].map(([, name, hex]) => [name, Buffer.from(hex, "hex")]),
);

/** The seconds to a window's end change from run to run; whether they are there does not. */
const withoutResetSeconds = (r: RateLimitResponse) => ({
  ...r,
  statuses: r.statuses.map((s) => ({ ...s, durationUntilReset: s.durationUntilReset && { ...s.durationUntilReset, seconds: 0 } })),
});

const DOMAIN = "llm-mesh-test";

describe("envoyproxy/ratelimit with a domain-only config", () => {
  let redis: Redis;
  let service: RateLimitService;
  before(async () => {
    redis = await startRedis();
    service = await startRateLimitService({ redis, domain: DOMAIN });
  });
  after(async () => {
    await service?.stop();
    await redis?.stop();
  });

  /** Each test counts under its own tenant, so no test sees another's hits. */
  const tokens = (tenant: string, hits: number | undefined, limit = 100): Descriptor => ({
    entries: [["tenant", tenant], ["limit", "tokens"]],
    limit: { requestsPerUnit: limit, unit: "HOUR" },
    hitsAddend: hits,
  });
  const ask = async (...descriptors: Descriptor[]) => {
    const answer = await shouldRateLimit(service.grpcAddress, { domain: DOMAIN, descriptors });
    assert.equal(answer.status, 0, answer.message);
    assert.ok(answer.response);
    return answer.response;
  };
  const hourStart = () => Math.floor(Date.now() / 3_600_000) * 3600;

  test("enforces the descriptor's own limit, counting hits_addend atomically after the increment", async () => {
    const first = await ask(tokens("a", 60));
    assert.equal(first.overallCode, "OK");
    assert.deepEqual(first.statuses[0].currentLimit, { requestsPerUnit: 100, unit: 3, name: "" });
    assert.equal(first.statuses[0].limitRemaining, 40);
    const reset = first.statuses[0].durationUntilReset;
    assert.ok(reset && reset.seconds >= 1 && reset.seconds <= 3600 && reset.nanos === 0, JSON.stringify(reset));

    // 60 + 50 > 100: the reservation is refused whole, although 40 were left.
    const over = await ask(tokens("a", 50));
    assert.equal(over.overallCode, "OVER_LIMIT");
    assert.equal(over.statuses[0].code, "OVER_LIMIT");
    assert.equal(over.statuses[0].limitRemaining, 0);
    assert.ok(over.statuses[0].durationUntilReset);
    // ...and still counted: what a refused ask costs the budget.
    assert.equal(await redis.counter(counterKey(DOMAIN, [["tenant", "a"], ["limit", "tokens"]], hourStart())), 110);
  });

  test("writes one key per descriptor and window, expiring after the window", async () => {
    await ask(tokens("b", 7));
    const key = counterKey(DOMAIN, [["tenant", "b"], ["limit", "tokens"]], hourStart());
    assert.deepEqual(await redis.keys(`${DOMAIN}_tenant_b_*`), [key]);
    assert.equal(await redis.counter(key), 7);
    const ttl = await redis.ttl(key);
    // The unit plus the service's expiry jitter (EXPIRATION_JITTER_MAX_SECONDS, 300 by default).
    assert.ok(ttl > 3000 && ttl <= 3600 + 300, `ttl ${ttl}`);
  });

  test("hits_addend 0 looks without counting; no per-descriptor hits means the request's", async () => {
    await ask(tokens("c", 100));
    const key = counterKey(DOMAIN, [["tenant", "c"], ["limit", "tokens"]], hourStart());
    const look = await ask(tokens("c", 0));
    assert.equal(look.overallCode, "OK");
    assert.equal(look.statuses[0].limitRemaining, 0);
    assert.equal(await redis.counter(key), 100);
    const answer = await shouldRateLimit(service.grpcAddress, { domain: DOMAIN, descriptors: [tokens("c", undefined)], hitsAddend: 3 });
    assert.equal(answer.response?.overallCode, "OVER_LIMIT");
    assert.equal(await redis.counter(key), 103);
  });

  test("counts every descriptor of a request even when another is over its limit", async () => {
    const requests: Descriptor = { entries: [["tenant", "d"], ["limit", "requests"]], limit: { requestsPerUnit: 1000, unit: "MINUTE" }, hitsAddend: 1 };
    const answer = await ask(requests, tokens("d", 500));
    assert.equal(answer.overallCode, "OVER_LIMIT");
    assert.deepEqual(answer.statuses.map((s) => s.code), ["OK", "OVER_LIMIT"]);
    assert.equal(answer.statuses[0].limitRemaining, 999);
    assert.equal(await redis.counter(counterKey(DOMAIN, [["tenant", "d"], ["limit", "requests"]], Math.floor(Date.now() / 60_000) * 60)), 1);
  });

  test("a descriptor without a limit, or a domain the service lacks, is OK with no current_limit", async () => {
    const noLimit = await ask({ entries: [["tenant", "e"]], hitsAddend: 5 });
    assert.deepEqual(noLimit.statuses, [{ code: "OK", limitRemaining: 0 }]);
    const wrongDomain = await shouldRateLimit(service.grpcAddress, { domain: "not-configured", descriptors: [tokens("e", 5)] });
    assert.deepEqual(wrongDomain.response?.statuses, [{ code: "OK", limitRemaining: 0 }]);
    assert.deepEqual(await redis.keys("*_tenant_e_*"), []);
  });

  test("a malformed request is a gRPC error with a message, not an answer", async () => {
    const noDescriptors = await shouldRateLimit(service.grpcAddress, { domain: DOMAIN, descriptors: [] });
    assert.equal(noDescriptors.status, 2);
    assert.match(noDescriptors.message, /descriptor list must not be empty/);
    assert.equal(noDescriptors.response, undefined);
  });

  test("still speaks the bytes the filter's unit tests hold (assembly/__tests__/ratelimit-wire.ts)", async () => {
    assert.deepEqual(Object.keys(WIRE).sort(), ["REQUEST_HEX", "RESPONSE_FIRST_HEX", "RESPONSE_SECOND_HEX"]);
    // A second encoder, written apart from assembly/ratelimit/, writes the same request.
    const request = encodeRequest({
      domain: DOMAIN,
      descriptors: [
        { entries: [["tenant", "wire"], ["limit", "tokens"]], limit: { requestsPerUnit: 1000, unit: "HOUR" }, hitsAddend: 600 },
        { entries: [["tenant", "wire"], ["city", "zürich"]], limit: { requestsPerUnit: 100, unit: "MINUTE" }, hitsAddend: 1 },
      ],
    });
    assert.equal(request.toString("hex"), WIRE.REQUEST_HEX.toString("hex"));
    for (const expected of [WIRE.RESPONSE_FIRST_HEX, WIRE.RESPONSE_SECOND_HEX]) {
      const answer = await shouldRateLimit(service.grpcAddress, WIRE.REQUEST_HEX);
      assert.equal(answer.status, 0, answer.message);
      assert.deepEqual(withoutResetSeconds(answer.response!), withoutResetSeconds(decodeResponse(expected)));
    }
  });

  // Last: it replaces the suite's Redis. The throttle's failure mode depends on the error being quick.
  test("with Redis gone the service fails fast, and recovers once Redis is back", async () => {
    await redis.stop();
    const started = Date.now();
    const down = await shouldRateLimit(service.grpcAddress, { domain: DOMAIN, descriptors: [tokens("f", 1)] });
    assert.equal(down.status, 2);
    assert.equal(down.response, undefined);
    assert.ok(Date.now() - started < 1000, `${Date.now() - started} ms`);

    redis = await startRedis({ port: redis.port });
    let answer = down;
    for (let attempt = 0; attempt < 50 && answer.status !== 0; attempt++) {
      await new Promise((r) => setTimeout(r, 100));
      answer = await shouldRateLimit(service.grpcAddress, { domain: DOMAIN, descriptors: [tokens("f", 1)] });
    }
    assert.equal(answer.response?.overallCode, "OK", answer.message);
  });
});
