// Memory per Wasm VM. Envoy runs one VM per module per worker thread (plus one on the main thread),
// so the same chain started with 1 and with N workers differs by N-1 VMs of each module, and by N-1
// workers' own memory, which bare Envoy's difference measures and which is subtracted.
import { type Workload } from "./bodies.ts";
import { type Backends, type RunningEnvoy, startFront, stopEnvoy, workloadTarget } from "./envoys.ts";
import { rssBytes } from "./proc.ts";
import { BARE, type FilterModule, type Scenario } from "./scenarios.ts";
import { runWrk } from "./wrk.ts";

export interface MemoryResult {
  scenario: string;
  /** Distinct modules in the chain: VMs added per extra worker. */
  modules: number;
  rssOneWorker: number;
  rssManyWorkers: number;
  /** Envoy's own count of live Wasm VMs at each size (wasm.wasm_vm_count), as a cross-check. */
  vmsOneWorker: number;
  vmsManyWorkers: number;
  /** Bytes per VM; undefined for bare Envoy, the reference. */
  perVm?: number;
}

async function settledRss(front: RunningEnvoy, warm: Workload, bodyFile: string): Promise<{ rss: number; vms: number }> {
  // Enough connections that the kernel's reuse-port hashing hands every worker some requests, and
  // the largest body, so each VM's linear memory has grown to what real traffic makes it.
  await runWrk({ ...workloadTarget(front, warm, bodyFile), connections: 16, seconds: 1 });
  await new Promise((done) => setTimeout(done, 300));
  const stats = await front.stats();
  return { rss: rssBytes(front.pid), vms: stats.get("wasm.wasm_vm_count") ?? 0 };
}

export async function measureMemory(
  scenarios: Scenario[],
  filters: FilterModule[],
  backends: Backends,
  warm: Workload,
  bodyFile: string,
  workers: number,
): Promise<MemoryResult[]> {
  const results: MemoryResult[] = [];
  for (const scenario of scenarios) {
    const sizes: { rss: number; vms: number }[] = [];
    for (const concurrency of [1, workers]) {
      const front = await startFront(scenario, filters, backends, { concurrency });
      try {
        sizes.push(await settledRss(front, warm, bodyFile));
      } finally {
        await stopEnvoy(front);
      }
    }
    results.push({
      scenario: scenario.id,
      modules: new Set(scenario.chain).size,
      rssOneWorker: sizes[0].rss,
      rssManyWorkers: sizes[1].rss,
      vmsOneWorker: sizes[0].vms,
      vmsManyWorkers: sizes[1].vms,
    });
  }
  const bare = results.find((r) => r.scenario === BARE);
  if (bare) {
    const perWorker = bare.rssManyWorkers - bare.rssOneWorker;
    for (const r of results) {
      if (r === bare || r.modules === 0) continue;
      r.perVm = (r.rssManyWorkers - r.rssOneWorker - perWorker) / (workers - 1) / r.modules;
    }
  }
  return results;
}
