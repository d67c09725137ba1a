// Envoy's stats as the tests read them. The filters hand counter and gauge changes to Envoy in
// batches, each worker at most a flush period after the change (assembly/host/metric-batch.ts), so
// a stat read right after a request may not count it yet. A test waits for the value it expects,
// failing with the last value seen when it never comes, and then checks that the value is still
// there a flush period later, so that a count going past it fails too.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { repoDir } from "./envoy-bin.ts";

/** The modules' flush period, read from their source so that the two cannot drift apart. */
export const METRIC_FLUSH_MS = (() => {
  const source = readFileSync(join(repoDir, "assembly", "host", "metric-batch.ts"), "utf8");
  const found = /export const METRIC_FLUSH_MS: u32 = (\d+);/.exec(source);
  if (!found) throw new Error("assembly/host/metric-batch.ts no longer says METRIC_FLUSH_MS as tooling/stats.ts reads it");
  return Number(found[1]);
})();

/** Beyond the period: Envoy's timers fire late on a machine busy with the tests. */
const LATE_MS = 500;

/** How long a value may take to show by default: a batch on each side of the request, and lateness. */
export const SETTLE_TIMEOUT_MS = 2 * METRIC_FLUSH_MS + 4 * LATE_MS;

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** What reads stats: an EnvoyHandle (tooling/envoy.ts), as /stats?format=json gives them. */
export interface StatsSource {
  stats(): Promise<Map<string, number>>;
}

/** A stat's value now, 0 when Envoy has no such stat. */
export async function stat(envoy: StatsSource, name: string): Promise<number> {
  return (await envoy.stats()).get(name) ?? 0;
}

/**
 * Polls `read` until it gives `expected` (deep equality), failing with the last value after
 * `timeoutMs`, then reads it once more a flush period later: it must not have moved on.
 */
export async function settlesAt<T>(read: () => Promise<T>, expected: T, what: string, timeoutMs = SETTLE_TIMEOUT_MS): Promise<void> {
  const last = await pollUntil(read, (value) => isDeepStrictEqual(value, expected), timeoutMs);
  assert.deepEqual(last, expected, `${what}: not the expected value after ${timeoutMs} ms`);
  await sleep(METRIC_FLUSH_MS + LATE_MS);
  assert.deepEqual(await read(), expected, `${what}: went past the expected value within a flush period`);
}

/**
 * Waits until stat `name` is `value`, failing with the last value after `timeoutMs`; for a state a
 * test then acts on (a request in flight, one waiting). Only a state that lasts longer than a flush
 * period is sure to show: changes that undo each other within a batch never reach Envoy.
 */
export function waitForStat(envoy: StatsSource, name: string, value: number, timeoutMs = SETTLE_TIMEOUT_MS): Promise<void> {
  return statUntil(envoy, name, (v) => v === value, `${value}`, timeoutMs);
}

/** Waits until stat `name` is at least `value`, failing with the last value after `timeoutMs`. */
export function waitForStatAtLeast(envoy: StatsSource, name: string, value: number, timeoutMs = SETTLE_TIMEOUT_MS): Promise<void> {
  return statUntil(envoy, name, (v) => v >= value, `at least ${value}`, timeoutMs);
}

/** Reads until `accept` holds or `timeoutMs` has passed: the last value read. */
async function pollUntil<T>(read: () => Promise<T>, accept: (value: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await read();
  while (!accept(last) && Date.now() < deadline) {
    await sleep(25);
    last = await read();
  }
  return last;
}

async function statUntil(envoy: StatsSource, name: string, accept: (value: number) => boolean, wanted: string, timeoutMs: number): Promise<void> {
  const last = await pollUntil(() => stat(envoy, name), accept, timeoutMs);
  assert.ok(accept(last), `${name}: ${last}, not ${wanted}, after ${timeoutMs} ms`);
}

/** Waits until stat `name` is `value` and stays so (settlesAt). */
export function statSettlesAt(envoy: StatsSource, name: string, value: number, timeoutMs = SETTLE_TIMEOUT_MS): Promise<void> {
  return settlesAt(() => stat(envoy, name), value, name, timeoutMs);
}

/**
 * Waits until each stat of `expected` (name to value) is at its value, all in one read, and they
 * stay so (settlesAt): for several stats a flush period is waited once.
 */
export function statsSettleAt(envoy: StatsSource, expected: Record<string, number>, timeoutMs = SETTLE_TIMEOUT_MS): Promise<void> {
  const names = Object.keys(expected);
  const read = async () => {
    const stats = await envoy.stats();
    return Object.fromEntries(names.map((name) => [name, stats.get(name) ?? 0]));
  };
  return settlesAt(read, expected, names.join(", "), timeoutMs);
}

/**
 * A stat's value once every change made so far has reached Envoy: read until two reads a flush
 * period apart agree. For a baseline before requests whose effect a test then compares.
 */
export async function settledStat(envoy: StatsSource, name: string, timeoutMs = 4 * SETTLE_TIMEOUT_MS): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = await stat(envoy, name);
  for (;;) {
    await sleep(METRIC_FLUSH_MS + LATE_MS);
    const now = await stat(envoy, name);
    if (now === last) return now;
    assert.ok(Date.now() < deadline, `${name} still moving after ${timeoutMs} ms`);
    last = now;
  }
}
