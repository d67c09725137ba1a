// Which path a request took, as the routing and throttling filters decide and the metrics filter
// and access logs report: filter state `llm_mesh.route`.
import { filterState, setFilterState } from "../host/filter-state";
import { requestHeader } from "../host/callback-cache";
import { FACT_ROUTE } from "./filter-state-names";

export const ROUTE_PRIMARY = "primary";
export const ROUTE_CANARY = "canary";
export const ROUTE_SHADOW = "shadow";
export const ROUTE_FALLBACK = "fallback";

/** Envoy's request mirroring sends the copy with "-shadow" appended to the authority's host. */
export function isShadowAuthority(authority: string): bool {
  let host = authority;
  const colon = host.lastIndexOf(":");
  if (colon > 0 && host.indexOf("]") < colon) host = host.slice(0, colon);
  return host.endsWith("-shadow");
}

export function isShadowRequest(): bool {
  const authority = requestHeader(":authority");
  return authority != null && isShadowAuthority(authority);
}

/** `toHost` as setFilterState's: false keeps the route for this module's later stages only. */
export function setRoute(route: string, toHost: bool = true): void {
  setFilterState(FACT_ROUTE, route, toHost);
}

/** The route an earlier filter chose; "primary" when none did. */
export function currentRoute(): string {
  const route = filterState(FACT_ROUTE);
  return route != null && route.length > 0 ? route : ROUTE_PRIMARY;
}
