// V8's sampling profiler over Wasm code running in this process: how many samples landed in each
// Wasm function (self time) while `work` ran, out of all samples. Used for the body scan
// (kernels.ts) and for the one module's whole request (module-profile.ts).
import { Session } from "node:inspector/promises";

export interface WasmSamples {
  /** Samples by function name (the module's name section), Wasm code only. */
  byFunction: Map<string, number>;
  /** Every sample taken, in Wasm or not. */
  total: number;
}

/** Calls `work` repeatedly for `ms` under the profiler, sampling every `intervalUs`. */
export async function sampleWasm(work: () => void, ms: number, intervalUs: number): Promise<WasmSamples> {
  const session = new Session();
  session.connect();
  try {
    await session.post("Profiler.enable");
    await session.post("Profiler.setSamplingInterval", { interval: intervalUs });
    await session.post("Profiler.start");
    const until = performance.now() + ms;
    while (performance.now() < until) work();
    const { profile } = await session.post("Profiler.stop");
    const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
    const samples = profile.samples ?? [];
    const byFunction = new Map<string, number>();
    for (const id of samples) {
      const frame = frames.get(id)!;
      // V8's wasm-to-js wrappers are the way out to the host, not the module's code.
      if (!frame.url.startsWith("wasm://") || frame.functionName.startsWith("wasm-to-js")) continue;
      byFunction.set(frame.functionName, (byFunction.get(frame.functionName) ?? 0) + 1);
    }
    return { byFunction, total: samples.length };
  } finally {
    session.disconnect();
  }
}
