// A rule's test on one request header, as the throttle's and the router's `match.headers` write it:
// `{name, exact | prefix | present: true/false}`.

export enum HeaderTest {
  Exact = 0,
  Prefix,
  Present,
  Absent,
}

export class HeaderMatch {
  constructor(public name: string, public test: HeaderTest, public value: string) {}

  /** `actual` is the header's value, or null when the request has none. */
  matches(actual: string | null): bool {
    switch (this.test) {
      case HeaderTest.Exact: return actual != null && actual == this.value;
      case HeaderTest.Prefix: return actual != null && actual.startsWith(this.value);
      case HeaderTest.Present: return actual != null;
      default: return actual == null;
    }
  }
}
