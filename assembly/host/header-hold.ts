// The host side of holding request headers for a body that may never come (hold-rules.ts has the rules):
// one per root of each filter that holds (llm-admission, llm-throttle, llm-router). It records the
// held streams, asks for ticks only while one waits, and from the tick lets go those past their
// deadline through the stream's own letGoHeaders(), counts them, and says once what to fix when
// Envoy is seen keeping a body back.
import { StreamContext, RootContext, rootContext } from "./contexts";
import { defineCounter, incrementMetric, Logger } from "./calls";
import { nowMillis, requestBodyBytesReceived, setEffectiveContext } from "./callback-cache";
import { BodyHandOver, bodyWithheld, DEFAULT_HOLD_HEADERS_TIMEOUT_MS, Held, holdTickPeriodMs, HoldWatch } from "./hold-rules";

export class HeaderHold {
  /** Whether Envoy hands held requests their body, as far as this root has seen. */
  watch: HoldWatch<StreamContext> = new HoldWatch<StreamContext>(DEFAULT_HOLD_HEADERS_TIMEOUT_MS);
  private timeouts: i32 = -1;
  /** The configuration may hold headers at all; a stage that never does has nothing to say when told the flag is missing. */
  private mayHold: bool = false;

  /**
   * `metric` counts the requests let go; `warning`, logged once per root when the flag is found
   * missing, says what no longer happens and what to set where.
   */
  constructor(private logger: Logger, private metric: string, private warning: string) {}

  /** A configuration was accepted. What the watch learnt is kept: it is about this filter in Envoy. */
  configure(timeoutMs: i64, mayHold: bool): void {
    this.watch.timeoutMs = timeoutMs;
    this.mayHold = mayHold;
    if (mayHold && this.timeouts < 0) this.timeouts = defineCounter(this.metric);
  }

  /** Whether a request may hold its headers: not once the flag is known missing. */
  get holds(): bool {
    return this.watch.holds;
  }

  /** Whether a held request got its body here: the flag is known to be there. */
  get handsOverBody(): bool {
    return this.watch.handOver == BodyHandOver.Delivered;
  }

  /** A stream holds its headers now (the last thing its headers callback does); watched while nothing is known. */
  held(stream: StreamContext): void {
    if (!this.watch.watching) return;
    this.watch.hold(stream, nowMillis());
    // The first to wait starts the ticks that let it go; they stop once nothing waits.
    if (this.watch.held.length == 1) stream.askForTicks();
  }

  /** A held stream got a body chunk: the flag is there. */
  delivered(): void {
    this.watch.delivered();
  }

  /** A held stream ended (answered, reset) or went on by itself. */
  forget(stream: StreamContext): void {
    this.watch.forget(stream);
  }

  /** Ticks only while a held request waits for its body. */
  tickPeriodMs(): u32 {
    return this.watch.watching && this.watch.held.length > 0 ? <u32>holdTickPeriodMs(this.watch.timeoutMs) : 0;
  }

  /** From the root's tick: lets go the held requests whose body has not come by their deadline. */
  onTick(rootContextId: u32): void {
    const watch = this.watch;
    if (!watch.watching || watch.held.length == 0) return;
    const expired = watch.expired(nowMillis());
    if (expired.length == 0) return;
    let withheld = false;
    for (let i = 0; i < expired.length; i++) {
      const stream = unchecked(expired[i]).stream;
      // Properties are the stream's only once it is made current.
      setEffectiveContext(stream.contextId);
      const received = requestBodyBytesReceived();
      if (bodyWithheld(received)) withheld = true;
      this.logger.debug(stream.contextId, "no request body " + watch.timeoutMs.toString() + " ms after holding the headers (Envoy holds " +
        received.toString() + " body bytes): going on without holding them");
    }
    if (!withheld) {
      this.letGo(expired);
      return;
    }
    const streams = expired.concat(this.concluded(rootContextId));
    // In the one module every stage is the same Envoy filter: the others learn it too, before this
    // let-go hands them the headers (for a lone filter this root is its own, which knows already).
    const root = rootContext(rootContextId);
    if (root != null) root.headerPauseMissing();
    this.letGo(streams);
  }

  /**
   * The flag is known missing from another stage of the one module (assembly/mesh/): this one stops
   * holding too, and lets go what it holds.
   */
  missingElsewhere(rootContextId: u32): void {
    if (this.watch.handOver == BodyHandOver.Withheld) return;
    this.letGo(this.concluded(rootContextId));
  }

  /** Says once what to fix; no request holds from now on. The held streams, to let go. */
  private concluded(rootContextId: u32): Held<StreamContext>[] {
    if (this.mayHold) this.logger.warn(rootContextId, this.warning);
    return this.watch.withheld();
  }

  private letGo(streams: Held<StreamContext>[]): void {
    for (let i = 0; i < streams.length; i++) {
      incrementMetric(this.timeouts, 1);
      unchecked(streams[i]).stream.letGoHeaders();
    }
  }
}

/**
 * A root whose requests may hold their headers for the body: it ticks while one waits, lets go what
 * waits too long, and hears from the other stages of the one module when the flag is missing.
 * llm-throttle adds ticks of its own to these.
 */
export abstract class HoldingRoot extends RootContext {
  constructor(contextId: u32, public hold: HeaderHold) {
    super(contextId);
  }

  /** Ticks only while a request's headers wait for its body. */
  tickPeriodMs(): u32 {
    return this.hold.tickPeriodMs();
  }

  onTick(): void {
    this.hold.onTick(this.contextId);
  }

  /** Another stage of the one module found the header pause missing. */
  headerPauseMissing(): void {
    this.hold.missingElsewhere(this.contextId);
  }
}
