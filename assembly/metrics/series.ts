// The metric ids of each combination of label values a worker has seen, so that a request finds
// the series it records into without building their names: a name is the base plus up to seven
// `key=.=value;.;` tags, some 150 characters, and a request records six to eight of them. Names are
// built when a combination first needs a series, then only its id is kept.
import { incrementMetric, recordMetric } from "../host/calls";
import { MetricTable } from "../telemetry/metric-table";
import { RequestLabels, Series, SERIES_COUNT, seriesKind } from "./policy";

/** Not asked for yet; the table's NO_METRIC (-1) is never kept, see id(). */
const UNKNOWN: i32 = -2;
const BUCKETS: i32 = 1024;
/** Combinations kept per worker at most; beyond, requests build their series' names as before. */
const MAX_KEPT: i32 = 4 * BUCKETS;

/** One combination of label values and the ids of its series found so far. */
export class LabelSeries {
  next: LabelSeries | null = null;
  private ids: StaticArray<i32> = new StaticArray<i32>(SERIES_COUNT);

  constructor(readonly labels: RequestLabels, readonly hash: u32, private table: MetricTable) {
    for (let i = 0; i < SERIES_COUNT; i++) unchecked((this.ids[i] = UNKNOWN));
  }

  increment(series: Series, delta: i64): void {
    incrementMetric(this.id(series), delta);
  }

  record(series: Series, value: u64): void {
    recordMetric(this.id(series), value);
  }

  private id(series: Series): i32 {
    const known = unchecked(this.ids[series]);
    if (known >= 0) return known;
    // A series past max_series is asked for again each time, so that the table counts every update it drops.
    const id = this.table.id(seriesKind(series), this.labels.name(series));
    if (id >= 0) unchecked((this.ids[series] = id));
    return id;
  }
}

/** The combinations seen on one worker, at most MAX_KEPT and no more than the table has series. */
export class SeriesCache {
  private buckets: StaticArray<LabelSeries | null> = new StaticArray<LabelSeries | null>(BUCKETS);
  private size: i32 = 0;

  constructor(private table: MetricTable) {}

  /** The series of `labels`, kept for the next request with the same values while there is room. */
  of(labels: RequestLabels): LabelSeries {
    const hash = labels.hash();
    const bucket = <i32>(hash & <u32>(BUCKETS - 1));
    let at = unchecked(this.buckets[bucket]);
    while (at != null) {
      if (at.hash == hash && at.labels.equals(labels)) return at;
      at = at.next;
    }
    const found = new LabelSeries(labels, hash, this.table);
    if (this.size < min(this.table.limit, MAX_KEPT)) {
      found.next = unchecked(this.buckets[bucket]);
      unchecked((this.buckets[bucket] = found));
      this.size++;
    }
    return found;
  }
}
