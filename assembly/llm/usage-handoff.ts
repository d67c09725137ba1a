// The answer is read once per request. Envoy runs response callbacks in reverse filter order, so in
// the chain (admission, throttle, metrics, router) the metrics filter sees the response before the
// throttle filter: metrics announces at its response headers that it follows this response
// (filter state `llm_mesh.usage_tracked`, naming the tokenizer family it counts unreported text
// with) and publishes what it found in its onLog (`llm_mesh.usage`). The throttle filter's response
// headers come next; when the family is its own it keeps no tracker and reads the usage in its
// onDone, because Envoy runs every filter's onLog (metrics' after throttle's) before any filter's
// onDone, for streams that completed and for streams cut short alike (test/usage-handoff.test.ts
// holds the real Envoy to this).
import { filterState, setFilterState } from "../host/filter-state";
import { UsageFigures, UsageTracker } from "./answer";
import { TokenizerFamily, tokenizerFamilyName } from "./tokens";

export const FACT_USAGE_TRACKED = "llm_mesh.usage_tracked";
export const FACT_USAGE = "llm_mesh.usage";

/** Tells the filters that see the response later that `tracker` follows it and will be published. */
export function announceUsage(tracker: UsageTracker): void {
  setFilterState(FACT_USAGE_TRACKED, tokenizerFamilyName(tracker.family));
}

/** Whether an earlier-seeing filter follows this response and counts unreported text as `family` would. */
export function usageAnnounced(family: TokenizerFamily): bool {
  const announced = filterState(FACT_USAGE_TRACKED);
  return announced != null && announced == tokenizerFamilyName(family);
}

/** Hands the tracker's final figures to the filters that announced usage was read for them. */
export function publishUsage(tracker: UsageTracker): void {
  setFilterState(FACT_USAGE, UsageFigures.of(tracker).toString());
}

/** The figures published for this request, or null when none were. */
export function publishedUsage(): UsageFigures | null {
  const text = filterState(FACT_USAGE);
  return text != null ? UsageFigures.parse(text) : null;
}
