// The peer "Envoy's own filters" (envoy/bench-envoy-filters.yaml): a token-per-minute limit per API
// key and model from json_to_metadata, sse_to_metadata and the rate limit filter, counted by
// envoyproxy/ratelimit in Redis (tooling/ratelimit.ts), which the benchmark starts beside it.
import { type Redis, type RateLimitService, startRateLimitService } from "../../../tooling/ratelimit.ts";
import { launch, type RunningEnvoy } from "../envoys.ts";

/** The domain envoy/bench-envoy-filters.yaml asks about. */
export const DOMAIN = "llm-peers";

/**
 * The service's config: tokens per minute for each API key and model (a descriptor entry with no
 * value matches every value, counted apart). requests_per_unit is a uint32 in the service.
 */
export function serviceConfig(tokensPerMinute: number): string {
  return [
    `domain: ${DOMAIN}`,
    "descriptors:",
    "- key: api_key",
    "  descriptors:",
    "  - key: model",
    `    rate_limit: { unit: minute, requests_per_unit: ${tokensPerMinute} }`,
    "",
  ].join("\n");
}

export interface EnvoyFiltersPeer {
  envoy: RunningEnvoy;
  service: RateLimitService;
}

/** The rate limit service on `redis` with the limit, and the Envoy that asks it, in front of the upstream. */
export async function startEnvoyFilters(redis: Redis, upstreamPort: number, tokensPerMinute: number, workDir?: string): Promise<EnvoyFiltersPeer> {
  const service = await startRateLimitService({ redis, domain: DOMAIN, config: serviceConfig(tokensPerMinute), workDir });
  try {
    return { envoy: await launch("bench-envoy-filters", { UPSTREAM_PORT: upstreamPort, RLS_PORT: service.grpcPort }), service };
  } catch (err) {
    await service.stop();
    throw err;
  }
}
