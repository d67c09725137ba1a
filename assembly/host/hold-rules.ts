// What a filter that holds the request headers to read the body does when Envoy never hands the body
// over: the bookkeeping and the decisions as plain code, with no host calls, so that as-pect tests
// drive it with made-up times and byte counts. llm-admission (hold_headers), llm-throttle and
// llm-router (reading the body when admission's facts are not there) each keep one per root;
// header-hold.ts is the host side they share.
//
// Holding the headers (StopIteration) lets the body reach the filter only where the Wasm filter has
// `allow_on_headers_stop_iteration: true`; elsewhere Envoy stops the whole request and the filter
// never hears of its body again. No host call says which, so each root watches: a held stream that
// gets a body chunk proves the flag is there, and then nothing is watched any more; a held stream
// with no body by its deadline is let go (its filter decides at body time instead). Whether the flag
// is missing is concluded only when, at that deadline, Envoy holds body bytes of the request that the
// filter was not given (or when the host cannot say how many it received): a client that is merely
// slow to send its body shows nothing received, and one slow client must not switch holding off for
// good on a proxy that has the flag. Bytes received are counted, not their growth since the hold: a
// filter that holds only after an earlier one let the request go sees the whole body already
// received, and with the flag Envoy hands it over in the same call that resumed the headers. Once the
// flag is known missing no request holds its headers any more.

import { ConfigObject } from "../json/config-reader";

/** How long a held request waits for its body by default; the filters' `hold_headers_timeout_ms`. */
export const DEFAULT_HOLD_HEADERS_TIMEOUT_MS: i64 = 1000;
/** The shortest tick any filter asks for. */
export const MIN_HOLD_HEADERS_TIMEOUT_MS: i64 = 10;
/** Past any sensible route timeout. */
export const MAX_HOLD_HEADERS_TIMEOUT_MS: i64 = 60000;

/** `hold_headers_timeout_ms`, read alike by every filter that may hold the headers: refused outside its range. */
export function readHoldHeadersTimeoutMs(root: ConfigObject): i64 {
  return root.int("hold_headers_timeout_ms", DEFAULT_HOLD_HEADERS_TIMEOUT_MS, MIN_HOLD_HEADERS_TIMEOUT_MS, MAX_HOLD_HEADERS_TIMEOUT_MS);
}

/** What this root knows about Envoy handing the body to a filter that holds the headers. */
export enum BodyHandOver {
  /** Not known yet: held streams are watched. */
  Unknown = 0,
  /** A held stream got its body: the flag is there, nothing needs watching. */
  Delivered,
  /** Envoy kept a held stream's body from the filter: the flag is missing, nothing holds any more. */
  Withheld,
}

/** One stream holding its headers while nothing is known yet. */
export class Held<T> {
  constructor(
    public stream: T,
    /** When it is let go if no body came, in the host's milliseconds. */
    public deadline: i64,
  ) {}
}

export class HoldWatch<T> {
  handOver: BodyHandOver = BodyHandOver.Unknown;
  /** Oldest first. */
  held: Held<T>[] = [];

  constructor(public timeoutMs: i64) {}

  /** Whether a new request should hold its headers at all (the config asks for it). */
  get holds(): bool {
    return this.handOver != BodyHandOver.Withheld;
  }

  /** Whether held streams are still watched for a body. */
  get watching(): bool {
    return this.handOver == BodyHandOver.Unknown;
  }

  /** A stream holds its headers now; watched only while nothing is known. */
  hold(stream: T, now: i64): void {
    if (this.watching) this.held.push(new Held<T>(stream, now + this.timeoutMs));
  }

  /** A held stream got a body chunk: the flag is there, and every held stream will get its body too. */
  delivered(): void {
    if (!this.watching) return;
    this.handOver = BodyHandOver.Delivered;
    this.held.length = 0;
  }

  /** A stream that ended (answered, reset, done) before its deadline. */
  forget(stream: T): void {
    for (let i = 0; i < this.held.length; i++) {
      if (unchecked(this.held[i]).stream != stream) continue;
      this.held.splice(i, 1);
      return;
    }
  }

  /** The held streams whose deadline has passed, no longer watched. */
  expired(now: i64): Held<T>[] {
    const due: Held<T>[] = [];
    let i = 0;
    while (i < this.held.length) {
      const held = unchecked(this.held[i]);
      if (held.deadline > now) {
        i++;
        continue;
      }
      due.push(held);
      this.held.splice(i, 1);
    }
    return due;
  }

  /** The flag is missing: from now on nothing holds. Returns the held streams still waiting, to let go at once. */
  withheld(): Held<T>[] {
    const waiting = this.held;
    this.held = [];
    this.handOver = BodyHandOver.Withheld;
    return waiting;
  }
}

/**
 * Whether Envoy keeps body bytes from a stream held past its deadline that never got a chunk: it has
 * received some (requestBodyBytesReceived in callback-cache.ts). A figure the host did not give (-1) leaves the
 * timeout alone as the sign.
 */
export function bodyWithheld(bodyBytesReceived: i64): bool {
  return bodyBytesReceived != 0;
}

export const MIN_HOLD_TICK_MS: i64 = 10;
export const MAX_HOLD_TICK_MS: i64 = 1000;

/** How often a watching root looks at its deadlines: a held stream is let go within timeout + this. */
export function holdTickPeriodMs(timeoutMs: i64): i64 {
  const period = timeoutMs / 4;
  if (period < MIN_HOLD_TICK_MS) return MIN_HOLD_TICK_MS;
  return period > MAX_HOLD_TICK_MS ? MAX_HOLD_TICK_MS : period;
}
