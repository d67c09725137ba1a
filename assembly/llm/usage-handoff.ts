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
import { UsageTracker } from "./usage-tracker";
import { TokenizerFamily, tokenizerFamilyName } from "./tokens";
import { FACT_USAGE, FACT_USAGE_TRACKED } from "./filter-state-names";

/**
 * What one filter read from a response, as it hands it to another: the prompt tokens the response
 * reported (-1: none) and the completion tokens, written "<prompt>,<completion>".
 */
export class UsageFigures {
  constructor(public promptTokens: i64, public completionTokens: i64) {}

  static of(tracker: UsageTracker): UsageFigures {
    return new UsageFigures(tracker.promptTokens, tracker.completionTokens);
  }

  toString(): string {
    return this.promptTokens.toString() + "," + this.completionTokens.toString();
  }

  /** The figures from their text; null for anything not written by toString. */
  static parse(text: string): UsageFigures | null {
    const comma = text.indexOf(",");
    if (comma < 0) return null;
    const prompt = text.startsWith("-1,") ? -1 : decimal(text, 0, comma);
    const completion = decimal(text, comma + 1, text.length);
    if (prompt < -1 || completion < 0) return null;
    return new UsageFigures(prompt, completion);
  }
}

/** The non-negative decimal number from `start` to `end` of `text`; -2 if it is not one. */
function decimal(text: string, start: i32, end: i32): i64 {
  if (start >= end || end - start > 18) return -2;
  let value: i64 = 0;
  for (let i = start; i < end; i++) {
    const digit = text.charCodeAt(i) - 0x30;
    if (<u32>digit > 9) return -2;
    value = value * 10 + <i64>digit;
  }
  return value;
}

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
