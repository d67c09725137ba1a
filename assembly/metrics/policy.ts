// What one finished request contributes to the metrics and to its access-log record, as plain
// functions of what the other filters decided and what Envoy and the response said.
import {
  ACTIVE_REQUESTS, LABEL_API, LABEL_OUTCOME, LABEL_REQUEST_MODEL, LABEL_RESPONSE_MODEL, LABEL_ROUTE,
  LABEL_STATUS_CLASS, LABEL_TENANT, LABEL_TOKEN_TYPE, REQUEST_DURATION, REQUESTS, TaggedName,
  TIME_PER_OUTPUT_TOKEN, TIME_TO_FIRST_TOKEN, TOKEN_TYPE_INPUT, TOKEN_TYPE_OUTPUT, TOKEN_USAGE, USAGE_TOKENS,
} from "../telemetry/metric-names";
import { KeyHash } from "../text/key-hash";
import { MetricKind } from "../telemetry/metric-table";
import { UsageTracker } from "../llm/usage-tracker";
import {
  OUTCOME_ADMITTED, OUTCOME_CANCELLED, OUTCOME_QUEUED, OUTCOME_REDIRECTED, OUTCOME_REJECTED, OUTCOME_THROTTLED, OUTCOME_UPSTREAM_ERROR,
} from "../llm/outcome";

export const STATUS_CLASS_NONE = "none";
const STATUS_CLASSES: string[] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/** "2xx" and so on; "none" when no response was sent (the client went away first). */
export function statusClass(status: i64): string {
  if (status < 100 || status > 599) return STATUS_CLASS_NONE;
  return unchecked(STATUS_CLASSES[<i32>(status / 100) - 1]);
}

/** What Envoy and the response say about how the request ended. */
export class Ending {
  /** The HTTP status sent downstream; 0 when none was. */
  status: i64 = 0;
  /** Envoy's %RESPONSE_CODE_DETAILS%: "via_upstream", "upstream_reset_before_response_started{...}", ... */
  details: string = "";
}

function isUpstreamFailure(ending: Ending): bool {
  const details = ending.details;
  if (details.startsWith("upstream_") || details.startsWith("no_healthy_upstream")) return true;
  return ending.status >= 500;
}

function isClientGone(ending: Ending): bool {
  return ending.details.startsWith("downstream_") || ending.status == 0;
}

/**
 * The request's outcome from the other filters' decisions (filter state `llm_mesh.admission`:
 * admitted | clamped | passed_through | rejected:<code>; `llm_mesh.throttle`: admitted |
 * admitted_after_wait | queued | waiting:<rule> | redirected:<rule> | rejected:<rule>; null when
 * that filter is not installed or did not decide; unknown values count as let through) and its
 * ending. A refusal by a filter wins: its local reply is the ending. Then the upstream's failure,
 * then how the request was let through.
 */
export function outcomeOf(admission: string | null, throttle: string | null, ending: Ending): string {
  const throttled = throttle != null ? throttle : "";
  if (admission != null && admission.startsWith("rejected")) return OUTCOME_REJECTED;
  if (throttled.startsWith("rejected")) return OUTCOME_THROTTLED;
  // Still waiting in the throttle's queue when the stream ended: the client gave up, or Envoy did.
  if (throttled.startsWith("waiting")) return isClientGone(ending) ? OUTCOME_CANCELLED : OUTCOME_THROTTLED;
  if (isUpstreamFailure(ending)) return OUTCOME_UPSTREAM_ERROR;
  if (isClientGone(ending)) return OUTCOME_CANCELLED;
  if (throttled.startsWith("queued") || throttled == "admitted_after_wait") return OUTCOME_QUEUED;
  if (throttled.startsWith("redirected")) return OUTCOME_REDIRECTED;
  return OUTCOME_ADMITTED;
}

/** Whether the model answered, which is what lets a new model name take a label slot. */
export function wasServed(outcome: string, status: i64): bool {
  if (status < 200 || status > 299) return false;
  return outcome == OUTCOME_ADMITTED || outcome == OUTCOME_QUEUED || outcome == OUTCOME_REDIRECTED;
}

/** What an answer cost, as the metrics count it and the request record (and trace span) say it. */
export class AnswerFigures {
  /** Time from the request's start to the first streamed text, ms; -1 when none was streamed. */
  ttftMs: i64 = -1;
  /** Both -1 when the model did no work: it neither reported usage nor sent text. */
  promptTokens: i64 = -1;
  completionTokens: i64 = -1;
  /** Whether the answer reported its usage; else llm-mesh counted it. */
  reported: bool = false;
}

/** A finished answer's figures; `estimatedPrompt` stands for a prompt count the answer did not report. */
export function answerFigures(tracker: UsageTracker, estimatedPrompt: i64, startMs: i64): AnswerFigures {
  const figures = new AnswerFigures();
  if (tracker.stream && tracker.firstContentAtMs > 0) figures.ttftMs = max<i64>(tracker.firstContentAtMs - startMs, 0);
  figures.reported = tracker.sawUsage && tracker.promptTokens >= 0;
  const completion = tracker.completionTokens;
  if (tracker.sawUsage || tracker.promptTokens >= 0 || completion > 0) {
    figures.promptTokens = tracker.promptTokens >= 0 ? tracker.promptTokens : estimatedPrompt;
    figures.completionTokens = completion;
  }
  return figures;
}

/**
 * Milliseconds per output token after the first: the time from the first content to the last
 * over the tokens that followed the first, rounded. -1 when there is nothing to divide.
 */
export function timePerOutputToken(firstContentMs: i64, lastContentMs: i64, completionTokens: i64): i64 {
  if (firstContentMs <= 0 || lastContentMs < firstContentMs || completionTokens < 2) return -1;
  const span = lastContentMs - firstContentMs;
  const tokens = completionTokens - 1;
  return (span + tokens / 2) / tokens;
}

/** The series one request records into, each named from the request's labels. */
export enum Series {
  Requests = 0,
  Duration,
  TimeToFirstToken,
  TimePerOutputToken,
  InputTokenUsage,
  OutputTokenUsage,
  InputUsageTokens,
  OutputUsageTokens,
}

export const SERIES_COUNT: i32 = Series.OutputUsageTokens + 1;

export function seriesKind(series: Series): MetricKind {
  if (series == Series.Requests || series == Series.InputUsageTokens || series == Series.OutputUsageTokens) return MetricKind.Counter;
  return MetricKind.Histogram;
}

/** The label values of one request; each already bounded (slots, `other`, fixed vocabularies). */
export class RequestLabels {
  requestModel: string = "";
  responseModel: string = "";
  api: string = "";
  route: string = "";
  statusClass: string = "";
  outcome: string = "";
  /** Empty when tenant labels are off. */
  tenant: string = "";

  private base(name: string): TaggedName {
    return new TaggedName(name).tag(LABEL_REQUEST_MODEL, this.requestModel).tag(LABEL_API, this.api).tag(LABEL_ROUTE, this.route);
  }

  private withTenant(name: TaggedName): string {
    if (this.tenant.length > 0) name.tag(LABEL_TENANT, this.tenant);
    return name.toString();
  }

  requests(): string {
    return this.withTenant(this.base(REQUESTS).tag(LABEL_STATUS_CLASS, this.statusClass).tag(LABEL_OUTCOME, this.outcome));
  }

  duration(): string {
    return this.base(REQUEST_DURATION).tag(LABEL_STATUS_CLASS, this.statusClass).toString();
  }

  timeToFirstToken(): string {
    return this.base(TIME_TO_FIRST_TOKEN).toString();
  }

  timePerOutputToken(): string {
    return this.base(TIME_PER_OUTPUT_TOKEN).toString();
  }

  tokenUsage(tokenType: string): string {
    return this.base(TOKEN_USAGE).tag(LABEL_TOKEN_TYPE, tokenType).toString();
  }

  usageTokens(tokenType: string): string {
    return this.withTenant(this.base(USAGE_TOKENS).tag(LABEL_RESPONSE_MODEL, this.responseModel).tag(LABEL_TOKEN_TYPE, tokenType));
  }

  name(series: Series): string {
    switch (series) {
      case Series.Requests: return this.requests();
      case Series.Duration: return this.duration();
      case Series.TimeToFirstToken: return this.timeToFirstToken();
      case Series.TimePerOutputToken: return this.timePerOutputToken();
      case Series.InputTokenUsage: return this.tokenUsage(TOKEN_TYPE_INPUT);
      case Series.OutputTokenUsage: return this.tokenUsage(TOKEN_TYPE_OUTPUT);
      case Series.InputUsageTokens: return this.usageTokens(TOKEN_TYPE_INPUT);
      default: return this.usageTokens(TOKEN_TYPE_OUTPUT);
    }
  }

  /** Whether every label value is the same: then so are the names of all their series. */
  equals(other: RequestLabels): bool {
    return this.requestModel == other.requestModel && this.responseModel == other.responseModel && this.api == other.api &&
      this.route == other.route && this.statusClass == other.statusClass && this.outcome == other.outcome && this.tenant == other.tenant;
  }

  /** A hash of the label values, for finding their series again. */
  hash(): u32 {
    const h = new KeyHash().add(this.requestModel).add(this.responseModel).add(this.api).add(this.route)
      .add(this.statusClass).add(this.outcome).add(this.tenant).fingerprint();
    return <u32>(h ^ (h >>> 32));
  }
}

/** The in-flight gauge is per model only: the route is chosen by a filter that runs later. */
export function activeRequestsName(requestModel: string): string {
  return new TaggedName(ACTIVE_REQUESTS).tag(LABEL_REQUEST_MODEL, requestModel).toString();
}
