// Where a filter's time goes, counted rather than sampled: Envoy at wasm:trace logs every call
// across the Wasm boundary, host to VM (callbacks, and malloc for data handed in) and VM to host
// (proxy_* imports). A few requests per workload give the counts per request.
import { type Workload } from "./bodies.ts";
import { type Backends, checkOnce, startFront, stopEnvoy } from "./envoys.ts";
import { type FilterModule, type Scenario } from "./scenarios.ts";

export interface HostCallCount {
  scenario: string;
  workload: string;
  /** host->vm per request, by export name (proxy_on_*, malloc). */
  callbacks: Record<string, number>;
  /** vm->host per request, by import name (proxy_*). */
  hostCalls: Record<string, number>;
  /** Bytes the host copied into the VM per request (sum of malloc sizes). */
  bytesIn: number;
}

const LINE = /\[(host->vm|vm->host)\] (?:env\.)?([a-z_0-9]+)\(([^)]*)\)/g;

function tally(log: string, requests: number, scenario: string, workload: string): HostCallCount {
  const callbacks: Record<string, number> = {};
  const hostCalls: Record<string, number> = {};
  let bytesIn = 0;
  for (const [, direction, name, args] of log.matchAll(LINE)) {
    const into = direction === "host->vm" ? callbacks : hostCalls;
    into[name] = (into[name] ?? 0) + 1;
    if (name === "malloc") bytesIn += Number(args);
  }
  const perRequest = (counts: Record<string, number>) => Object.fromEntries(Object.entries(counts).map(([k, n]) => [k, n / requests]));
  return { scenario, workload, callbacks: perRequest(callbacks), hostCalls: perRequest(hostCalls), bytesIn: bytesIn / requests };
}

export async function countHostCalls(
  scenario: Scenario,
  filters: FilterModule[],
  backends: Backends,
  workloads: Workload[],
  requests: number,
): Promise<HostCallCount[]> {
  const front = await startFront(scenario, filters, backends, { logLevel: "info", componentLogLevel: "wasm:trace" });
  const counts: HostCallCount[] = [];
  try {
    for (const w of workloads) {
      // One request first so that per-worker setup (context creation, lazy config) is not counted.
      await checkOnce(front, w);
      await new Promise((done) => setTimeout(done, 100));
      const from = front.log().length;
      for (let i = 0; i < requests; i++) {
        const problem = await checkOnce(front, w);
        if (problem) throw new Error(`${scenario.id}/${w.id}: ${problem}`);
      }
      // Envoy flushes its log asynchronously.
      await new Promise((done) => setTimeout(done, 300));
      counts.push(tally(front.log().slice(from), requests, scenario.id, w.id));
    }
  } finally {
    await stopEnvoy(front);
  }
  return counts;
}
