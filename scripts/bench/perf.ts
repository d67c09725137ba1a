// Where the proxy's CPU goes under load, by the home of the code that ran: Envoy's own binary, code
// V8 generated at run time (the Wasm modules and V8's stubs between them and Envoy), the kernel, and
// the shared libraries. Linux perf samples the proxy process on the software clock, which works
// where the machine offers no hardware counters. Envoy's binary is stripped and Envoy passes no
// flags to V8 (so V8 writes no symbol map), so this split is as fine as it goes from outside.
import { execFile, spawnSync } from "node:child_process";
import { promisify } from "node:util";

export const CODE_HOMES = ["envoy", "jit", "kernel", "libraries"] as const;
export type CodeHome = (typeof CODE_HOMES)[number];

export interface CpuSplit {
  scenario: string;
  workload: string;
  samples: number;
  /** Share of the samples per home, 0..1. */
  shares: Record<CodeHome, number>;
}

export function perfAvailable(): boolean {
  return spawnSync("perf", ["--version"], { stdio: "ignore" }).status === 0;
}

/** The home of a perf "shared object" name. */
export function homeOf(dso: string): CodeHome {
  if (dso === "envoy") return "envoy";
  if (dso.startsWith("[JIT]")) return "jit";
  if (dso.startsWith("[kernel") || dso === "[vdso]") return "kernel";
  return "libraries";
}

/** Sample counts per home from `perf report --stdio -F overhead,sample,dso` text. */
export function parseReport(text: string): { samples: number; byHome: Record<CodeHome, number> } {
  const byHome: Record<CodeHome, number> = { envoy: 0, jit: 0, kernel: 0, libraries: 0 };
  let samples = 0;
  for (const line of text.split("\n")) {
    const row = /^\s*[\d.]+%\s+(\d+)\s+(.+?)\s*$/.exec(line);
    if (!row) continue;
    const count = Number(row[1]);
    byHome[homeOf(row[2])] += count;
    samples += count;
  }
  return { samples, byHome };
}

const run = promisify(execFile);
const lastLine = (err: unknown) => String((err as { stderr?: string }).stderr || err).trim().split("\n").pop();

/** Samples process `pid` for `seconds`; the share per home, or why it could not. */
export async function sampleCpu(pid: number, seconds: number, dataFile: string): Promise<Omit<CpuSplit, "scenario" | "workload"> | string> {
  let report: string;
  try {
    await run("perf", ["record", "-F", "999", "-p", String(pid), "-o", dataFile, "--", "sleep", String(seconds)]);
  } catch (err) {
    return `perf record failed: ${lastLine(err)}`;
  }
  try {
    report = (await run("perf", ["report", "-i", dataFile, "--no-children", "--sort", "dso", "--stdio", "-F", "overhead,sample,dso"])).stdout;
  } catch (err) {
    return `perf report failed: ${lastLine(err)}`;
  }
  const { samples, byHome } = parseReport(report);
  if (samples === 0) return "perf recorded no samples";
  const shares = Object.fromEntries(CODE_HOMES.map((h) => [h, byHome[h] / samples])) as Record<CodeHome, number>;
  return { samples, shares };
}
