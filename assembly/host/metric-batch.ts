// Counter and gauge changes held in the VM and handed to Envoy in batches. Every request moves a
// dozen counters and gauges (throttle's in-flight, requests and reserved tokens, the metrics
// filter's requests and tokens, the router's decision); one proxy_increment_metric each was a
// quarter of a request's host calls. Held here, they reach Envoy as one call per metric that moved
// since the last batch, from a root's tick at most METRIC_FLUSH_MS apart, and a change that undoes
// another within one batch (in-flight +1 then -1) never reaches it at all.
//
// The batch belongs to the VM, not to a root: Envoy numbers metrics per VM, so every root of the
// VM (a configuration being replaced, and its successor) adds to the same entries and any root's
// tick sends them all.

/**
 * How stale a counter or gauge may be in Envoy's stats, in milliseconds: what Prometheus scrapes
 * during a burst lags by at most this (plus the lateness of Envoy's timer). A second is well under
 * any scrape interval (Prometheus' default is 15 s, Istio's 15 s too), so a scrape sees at most one
 * batch fewer than happened, while a busy worker makes one call per moved metric per second instead
 * of several per request. A constant rather than a setting: a scrape-sized period would only hide
 * counts for longer, and a shorter one buys nothing a scrape can see.
 */
export const METRIC_FLUSH_MS: u32 = 1000;

/** A batch is sent when a tick comes this much earlier than the period too: Envoy's timers fire a little late or early. */
const FLUSH_SLACK_MS: i64 = <i64>METRIC_FLUSH_MS / 8;

/** Where a batch goes: proxy_increment_metric in the filters, a recorder in the unit tests. */
export type MetricSink = (id: u32, delta: i64) => void;

/**
 * The changes not yet handed over, one entry per metric id, in the order they first moved. Found by
 * a scan: a batch holds the few dozen metrics a worker's traffic moves in a second (the metrics
 * filter bounds its series), where a scan of ids beats hashing them and costs no Map's code.
 */
export class MetricBatch {
  private ids: u32[] = [];
  private deltas: i64[] = [];
  /** When the next batch is due on the host's clock; 0 before the first was sent. */
  private dueAt: i64 = 0;

  /** Nothing is held back. */
  get empty(): bool {
    return this.ids.length == 0;
  }

  /** Holds `delta` for metric `id`; true when the batch was empty, so its root must now ask for a tick. */
  add(id: u32, delta: i64): bool {
    if (delta == 0) return false;
    const ids = this.ids;
    const n = ids.length;
    for (let i = 0; i < n; i++) {
      if (unchecked(ids[i]) == id) {
        unchecked((this.deltas[i] += delta));
        return false;
      }
    }
    ids.push(id);
    this.deltas.push(delta);
    return n == 0;
  }

  /** Whether a tick at `now` should send the batch: the period has passed since the last one. */
  due(now: i64): bool {
    return !this.empty && now >= this.dueAt;
  }

  /**
   * Hands every held change that did not cancel out to `sink`, forgets them all, and starts the
   * next period at `now`; the number of changes handed over.
   */
  flush(sink: MetricSink, now: i64): i32 {
    let sent = 0;
    const ids = this.ids;
    const deltas = this.deltas;
    for (let i = 0, n = ids.length; i < n; i++) {
      const delta = unchecked(deltas[i]);
      if (delta == 0) continue;
      sink(unchecked(ids[i]), delta);
      sent++;
    }
    ids.length = 0;
    deltas.length = 0;
    this.dueAt = now + <i64>METRIC_FLUSH_MS - FLUSH_SLACK_MS;
    return sent;
  }
}
