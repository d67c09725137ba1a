// How llm-throttle, llm-metrics and llm-router learn what a request is: from the facts an earlier
// llm-mesh filter published (request-facts.ts; in the one-module build they stay in the VM), or else
// from the body, which the filter buffers up to its own max_body_bytes and reads itself. Facts can
// come at either time: with the headers from a filter that held them until it had read the body,
// with the body from one that let the headers go first (llm-admission without hold_headers).
//
// A filter that must know before the headers go upstream (throttle, router) holds them while it
// waits, watched by its root's HeaderHold (host/header-hold.ts). Where Envoy keeps a held request's
// body back, or once the hold times out, the headers go first and the filter acts when the body
// comes; what it must do before they go is its headersGoFirst().
import { FilterHeadersStatusValues, RootContext, StreamContext } from "../host/contexts";
import { requestBody } from "../host/calls";
import { setEffectiveContext } from "../host/callback-cache";
import { HeaderHold } from "../host/header-hold";
import { ApiShape, LlmRequest, readLlmRequest } from "./request";
import { RequestFacts } from "./request-facts";
import { TokenEstimator } from "./tokens";

/** Where a body being read stands after a request body callback. */
export enum BodyStep {
  /** More is coming and the limit is not reached: Envoy buffers it, and hands over all of it next time. */
  Buffer = 0,
  /** Past the filter's limit: it is not read. */
  OverLimit,
  /** All of it, within the limit. */
  Whole,
}

/**
 * A stream of a filter that reads the facts, else the body. The filters' stream classes extend it,
 * so that reading costs a request no object of its own.
 */
export abstract class FactsOrBodyStream extends StreamContext {
  /** The facts an earlier filter published, as last looked up; null when none were (yet). */
  protected facts: RequestFacts | null = null;
  /** The headers went upstream before the body was read: they can no longer be changed, nor read. */
  protected headersGone: bool = false;
  /** The headers wait for the body, watched by `headerHold` until a chunk comes. */
  private holding: bool = false;

  /** `headerHold`: the root's, for a filter that holds the headers for the body; null for one that never does. */
  constructor(contextId: u32, root: RootContext, private headerHold: HeaderHold | null) {
    super(contextId, root);
  }

  /** Looks up the facts an earlier filter published. */
  protected earlierFacts(): RequestFacts | null {
    const facts = RequestFacts.fromFilterState();
    this.facts = facts;
    return facts;
  }

  /** From the headers callback, when the filter needs the body: holds the headers where it can, else lets them go first. */
  protected awaitBody(): FilterHeadersStatusValues {
    const hold = this.headerHold;
    if (hold == null) return FilterHeadersStatusValues.Continue;
    if (!hold.holds) {
      // This Envoy never hands a held request its body (host/hold-rules.ts).
      this.goFirst();
      return FilterHeadersStatusValues.Continue;
    }
    this.holding = true;
    hold.held(this);
    return FilterHeadersStatusValues.StopIteration;
  }

  /** From the root's tick: no body came while the headers were held; they go on, and the body is read when it comes. */
  letGoHeaders(): void {
    // Header changes and the resume act on the stream only once it is made current.
    setEffectiveContext(this.contextId);
    this.holding = false;
    this.goFirst();
    this.continueRequest();
  }

  private goFirst(): void {
    this.headersGoFirst();
    this.headersGone = true;
  }

  /** What the filter does while it still has the headers, before they go upstream without waiting for the body. */
  protected headersGoFirst(): void {}

  /**
   * A request body callback of a stream reading the body. Once the body is whole or past the limit
   * the facts are looked up again: a filter before this one that read the body without holding the
   * headers published them as it let the body through, and they stand in for reading it.
   */
  protected bodyStep(bodyBufferLength: usize, endOfStream: bool, maxBodyBytes: i64): BodyStep {
    const hold = this.headerHold;
    if (this.holding && hold != null) {
      this.holding = false;
      hold.delivered();
    }
    const over = <i64>bodyBufferLength > maxBodyBytes;
    if (!endOfStream && !over) return BodyStep.Buffer;
    this.earlierFacts();
    return over ? BodyStep.OverLimit : BodyStep.Whole;
  }

  /** The whole body (BodyStep.Whole), read as a request of this API. */
  protected readRequest(bodyBufferLength: usize, shape: ApiShape, estimator: TokenEstimator): LlmRequest {
    return readLlmRequest(requestBody(0, <u32>bodyBufferLength), shape, estimator);
  }

  /** A request that ends while its headers are held is no longer watched. */
  onDelete(): void {
    const hold = this.headerHold;
    if (this.holding && hold != null) hold.forget(this);
  }
}
