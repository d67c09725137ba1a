// One measurement of one proxy on one workload: wrk under load, then a lone connection, with the
// CPU time the proxy (and anything it calls per request) used meanwhile. The main benchmark and the
// peer mode (peers.ts) take their samples the same way, so their figures compare.
import { type Workload } from "./bodies.ts";
import { type Reachable, workloadTarget } from "./envoys.ts";
import { cpuNs } from "./proc.ts";
import { type Cell } from "./report.ts";
import { runWrk } from "./wrk.ts";

export interface Measured extends Reachable {
  pid: number;
  /** Services the proxy calls on every request (a rate limit service, Redis): their CPU is reported apart. */
  sidePids?: number[];
}

export interface MeasureSettings {
  connections: number;
  seconds: number;
  loneSeconds: number;
  /** CPUs for wrk (taskset list), or anywhere. */
  wrkCpus?: string;
  /** How a process's CPU time is read (proc.ts): cpuNs by default. */
  cpu?: (pid: number) => number;
}

/** Adds one load sample and one lone-request sample to `cell`; a run with errors marks the cell. */
export async function measureCell(front: Measured, upstream: { pid: number }, w: Workload, bodyFile: string, cell: Cell, settings: MeasureSettings): Promise<void> {
  const run = { ...workloadTarget(front, w, bodyFile), cpus: settings.wrkCpus };
  const sidePids = front.sidePids ?? [];
  const cpu = settings.cpu ?? cpuNs;
  const sumCpuNs = (pids: number[]) => pids.reduce((total, pid) => total + cpu(pid), 0);
  const frontBefore = cpu(front.pid);
  const upstreamBefore = cpu(upstream.pid);
  const sideBefore = sumCpuNs(sidePids);
  const t0 = process.hrtime.bigint();
  const load = await runWrk({ ...run, connections: settings.connections, seconds: settings.seconds });
  const wallNs = Number(process.hrtime.bigint() - t0);
  const frontNs = cpu(front.pid) - frontBefore;
  const upstreamNs = cpu(upstream.pid) - upstreamBefore;
  const sideNs = sumCpuNs(sidePids) - sideBefore;
  const lone = await runWrk({ ...run, connections: 1, seconds: settings.loneSeconds });
  for (const [what, result, seconds] of [["load", load, settings.seconds], ["lone", lone, settings.loneSeconds]] as const) {
    if (result.errors > 0) cell.problem = `${what} run had errors ${JSON.stringify(result.errorDetail)} in ${result.requests} requests`;
    if (result.requests === 0) cell.problem = `no request of the ${what} run completed in ${seconds} s`;
  }
  const requests = Math.max(1, load.requests);
  cell.load.push({
    rps: load.rps,
    p50Us: load.latencyUs.p50,
    p99Us: load.latencyUs.p99,
    cpuUsPerRequest: frontNs / 1000 / requests,
    ...(sidePids.length > 0 ? { sideCpuUsPerRequest: sideNs / 1000 / requests } : {}),
    frontBusy: frontNs / wallNs,
    upstreamBusy: upstreamNs / wallNs,
    requests: load.requests,
  });
  cell.lone.push({ p50Us: lone.latencyUs.p50, p99Us: lone.latencyUs.p99, requests: lone.requests });
}
