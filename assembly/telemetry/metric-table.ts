// Metrics defined on first use, one per distinct tagged name, with their ids kept per worker.
//
// Envoy hands out a new id (and keeps a new map entry) on every define call, even for a name it
// already has, so a name must be defined once per worker and its id kept: evicting and defining
// again would grow Envoy's memory without bound. The table is therefore capped instead; past the
// cap new names are not recorded, and the skipped updates are counted so the loss is visible.
import { defineCounter, defineGauge, defineHistogram, incrementMetric, recordMetric } from "../host/calls";
import { SERIES_DROPPED } from "./metric-names";

export enum MetricKind {
  Counter = 0,
  Gauge,
  Histogram,
}

export const NO_METRIC: i32 = -1;

export class MetricTable {
  private ids: Map<string, i32> = new Map<string, i32>();
  private droppedId: i32 = NO_METRIC;
  /** Updates skipped on this worker since it started. */
  dropped: i64 = 0;

  constructor(public limit: i32) {}

  get size(): i32 {
    return this.ids.size;
  }

  /** The metric's id, defining it on first use; NO_METRIC past the cap or when Envoy refuses. */
  id(kind: MetricKind, name: string): i32 {
    if (this.ids.has(name)) return this.ids.get(name);
    if (this.ids.size >= this.limit) {
      this.drop();
      return NO_METRIC;
    }
    let id = NO_METRIC;
    if (kind == MetricKind.Counter) id = defineCounter(name);
    else if (kind == MetricKind.Gauge) id = defineGauge(name);
    else id = defineHistogram(name);
    // A refused name is remembered too, so it is not offered to Envoy again on every request.
    this.ids.set(name, id);
    return id;
  }

  increment(name: string, delta: i64): void {
    incrementMetric(this.id(MetricKind.Counter, name), delta);
  }

  /** Gauges move both ways; the caller keeps the id so the decrement hits the same series. */
  gauge(name: string): i32 {
    return this.id(MetricKind.Gauge, name);
  }

  record(name: string, value: u64): void {
    recordMetric(this.id(MetricKind.Histogram, name), value);
  }

  /** Defines the dropped-updates counter up front, so it is exported (at 0) before anything drops. */
  defineDropped(): void {
    if (this.droppedId == NO_METRIC) this.droppedId = defineCounter(SERIES_DROPPED);
  }

  private drop(): void {
    this.dropped++;
    this.defineDropped();
    incrementMetric(this.droppedId, 1);
  }
}
