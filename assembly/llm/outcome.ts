// A request's outcome: the `llm_outcome` label of llm-metrics' series and the `llm_mesh.outcome`
// filter state that access logs and trace spans print.
import { setFilterState } from "../host/filter-state";
import { RECORD_OUTCOME } from "./filter-state-names";

export const OUTCOME_ADMITTED = "admitted";
export const OUTCOME_REJECTED = "rejected";
export const OUTCOME_THROTTLED = "throttled";
export const OUTCOME_QUEUED = "queued";
export const OUTCOME_REDIRECTED = "redirected";
export const OUTCOME_UPSTREAM_ERROR = "upstream_error";
export const OUTCOME_CANCELLED = "cancelled";

/**
 * Sets a refusing filter's decision (`fact`, e.g. llm_mesh.admission) and the request's outcome
 * together, as the filter sends the refusal. llm-metrics sets the outcome of every request, but one
 * a filter before it answers it learns of only in onLog, and Envoy ends the trace span, whose tags
 * read the outcome, before any filter's onLog.
 */
export function setRefusal(fact: string, decision: string, outcome: string, toHost: bool): void {
  setFilterState(fact, decision, toHost);
  setFilterState(RECORD_OUTCOME, outcome, toHost);
}
