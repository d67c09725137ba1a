// llm-mesh in one module: admission, throttle, metrics and router as stages of a single Wasm
// filter. Envoy then makes one set of callbacks per request instead of four, and the filters share
// one VM per worker, one copy of the runtime and one read of each header map per callback.
//
// Each stage is the filter's own root and stream classes, unchanged; this file only passes Envoy's
// callbacks to them the way Envoy's filter manager passes them along a chain of filters: the request
// in configuration order, a stage that holds the headers still sees the body and lets the later
// stages see headers and body once it lets them through, a stage that pauses the request (throttle's
// queue) resumes the later stages before Envoy's; the response in reverse order; a local response
// ends the request for every later stage.
import { ConfigErrors, ConfigObject } from "../json/config-reader";
import { StreamContext, FilterDataStatusValues, FilterHeadersStatusValues, RootContext } from "../host/contexts";
import { localResponsesSent } from "../host/calls";
import { nowMillis, resumeRequest } from "../host/callback-cache";
import { AdmissionRoot } from "../admission/filter";
import { MetricsRoot } from "../metrics/filter";
import { RouterRoot } from "../router/filter";
import { ThrottleRoot } from "../throttle/filter";
import { sharedTickPeriod, StageTicks } from "./ticks";

export const FILTER_NAME = "llm-mesh";

/** The sections of the configuration, in the order their stages see a request. */
export const STAGE_NAMES: string[] = ["admission", "throttle", "metrics", "router"];

function newStageRoot(name: string, contextId: u32): RootContext {
  if (name == "admission") return new AdmissionRoot(contextId);
  if (name == "throttle") return new ThrottleRoot(contextId);
  if (name == "metrics") return new MetricsRoot(contextId);
  return new RouterRoot(contextId);
}

export class MeshRoot extends RootContext {
  stages: RootContext[] = [];
  private stageTicks: StageTicks = new StageTicks(0);

  configure(source: ConfigObject, errors: ConfigErrors): void {
    source.onlyKeys(STAGE_NAMES);
    const stages: RootContext[] = [];
    for (let i = 0; i < STAGE_NAMES.length && errors.ok; i++) {
      const name = unchecked(STAGE_NAMES[i]);
      if (!source.has(name)) continue;
      const section = source.object(name);
      if (section == null) return;
      const stage = newStageRoot(name, this.contextId);
      const sectionErrors = new ConfigErrors();
      stage.configure(new ConfigObject(section.value, "", sectionErrors), sectionErrors);
      errors.addSection(name, sectionErrors);
      stages.push(stage);
    }
    if (errors.ok && stages.length == 0) errors.add("", "names no stage: give at least one of " + STAGE_NAMES.join(", "));
    if (errors.ok) {
      this.stages = stages;
      this.stageTicks = new StageTicks(stages.length);
    }
  }

  createContext(contextId: u32): StreamContext {
    const stages: StreamContext[] = [];
    for (let i = 0; i < this.stages.length; i++) stages.push(unchecked(this.stages[i]).createContext(contextId));
    return new MeshStream(contextId, this, stages);
  }

  /** The shortest period any stage needs; each stage is still ticked at its own (ticks.ts). */
  tickPeriodMs(): u32 {
    return sharedTickPeriod(this.stagePeriods());
  }

  onTick(): void {
    const periods = this.stagePeriods();
    const shared = sharedTickPeriod(periods);
    const now = nowMillis();
    for (let i = 0; i < this.stages.length; i++) {
      if (this.stageTicks.due(i, unchecked(periods[i]), shared, now)) unchecked(this.stages[i]).onTick();
    }
  }

  /** One Envoy filter, one flag: a stage that found it missing tells them all (host/header-hold.ts). */
  headerPauseMissing(): void {
    for (let i = 0; i < this.stages.length; i++) unchecked(this.stages[i]).headerPauseMissing();
  }

  private stagePeriods(): u32[] {
    const periods = new Array<u32>(this.stages.length);
    for (let i = 0; i < this.stages.length; i++) unchecked((periods[i] = unchecked(this.stages[i]).tickPeriodMs()));
    return periods;
  }

  onDelete(): void {
    for (let i = 0; i < this.stages.length; i++) unchecked(this.stages[i]).onDelete();
  }
}

export class MeshStream extends StreamContext {
  /** Stages that have been given the request headers, counted from the first. */
  private headersGiven: i32 = 0;
  private sawBody: bool = false;
  private requestEnded: bool = false;
  private bodyLength: usize = 0;
  /** A stage answered the request itself: nothing after it may act on the request. */
  private answered: bool = false;

  constructor(contextId: u32, root: MeshRoot, private stages: StreamContext[]) {
    super(contextId, root);
    for (let i = 0; i < stages.length; i++) unchecked(stages[i]).mesh = this;
  }

  onRequestHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    this.requestEnded = endOfStream;
    for (let i = 0, n = this.stages.length; i < n; i++) {
      const status = this.giveHeaders(i);
      if (this.answered) return FilterHeadersStatusValues.StopIteration;
      if (status != FilterHeadersStatusValues.Continue) return status;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    if (this.answered) return FilterDataStatusValues.StopIterationNoBuffer;
    this.sawBody = true;
    this.bodyLength = bodyBufferLength;
    if (endOfStream) this.requestEnded = true;
    return this.passRequestFrom(0);
  }

  /** Called by a stage that paused the request and now lets it go on (throttle, from its tick). */
  continueAfter(stage: StreamContext): void {
    if (this.answered) return;
    const next = this.stages.indexOf(stage) + 1;
    if (next <= 0) return;
    if (this.passRequestFrom(next) == FilterDataStatusValues.Continue) resumeRequest(this.contextId);
  }

  /**
   * The request so far to stages `from` onwards: headers to a stage that has not had them, then
   * the body seen so far (Envoy hands a buffering filter the whole buffer each time; stages that
   * let a chunk through ignore it). A stage that holds the headers still sees the body, as Envoy
   * gives it to a filter that holds; Continue means every stage let the request through.
   */
  private passRequestFrom(from: i32): FilterDataStatusValues {
    for (let i = from, n = this.stages.length; i < n; i++) {
      if (i >= this.headersGiven) {
        const status = this.giveHeaders(i);
        if (this.answered) return FilterDataStatusValues.StopIterationNoBuffer;
        if (!this.sawBody) {
          if (status != FilterHeadersStatusValues.Continue) return FilterDataStatusValues.StopIterationAndBuffer;
          continue;
        }
      }
      if (!this.sawBody) continue;
      const before = localResponsesSent();
      const status = unchecked(this.stages[i]).onRequestBody(this.bodyLength, this.requestEnded);
      if (localResponsesSent() != before) {
        this.answered = true;
        return FilterDataStatusValues.StopIterationNoBuffer;
      }
      if (status != FilterDataStatusValues.Continue) return status;
    }
    return FilterDataStatusValues.Continue;
  }

  private giveHeaders(i: i32): FilterHeadersStatusValues {
    this.headersGiven = i + 1;
    const before = localResponsesSent();
    const status = unchecked(this.stages[i]).onRequestHeaders(0, this.requestEnded && !this.sawBody);
    if (localResponsesSent() != before) this.answered = true;
    return status;
  }

  onResponseHeaders(_headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    for (let i = this.stages.length - 1; i >= 0; i--) {
      const status = unchecked(this.stages[i]).onResponseHeaders(0, endOfStream);
      if (status != FilterHeadersStatusValues.Continue) return status;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(bodyBufferLength: usize, endOfStream: bool): FilterDataStatusValues {
    for (let i = this.stages.length - 1; i >= 0; i--) {
      const status = unchecked(this.stages[i]).onResponseBody(bodyBufferLength, endOfStream);
      if (status != FilterDataStatusValues.Continue) return status;
    }
    return FilterDataStatusValues.Continue;
  }

  onLog(): void {
    for (let i = 0; i < this.stages.length; i++) unchecked(this.stages[i]).onLog();
  }

  onDone(): bool {
    let done = true;
    for (let i = 0; i < this.stages.length; i++) done = unchecked(this.stages[i]).onDone() && done;
    return done;
  }

  onDelete(): void {
    for (let i = 0; i < this.stages.length; i++) unchecked(this.stages[i]).onDelete();
  }
}
