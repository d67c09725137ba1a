// Process figures from /proc: CPU time of the proxy (all its threads), the steadiest cost measure
// on a shared machine, where requests/s also moves with whatever else runs; and resident memory.
import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** CPU time the process has used so far, in nanoseconds (summed over its threads' schedstat). */
export function cpuNs(pid: number): number {
  let total = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return total;
}

let nsPerTick: number | undefined;

/**
 * CPU time of the process in nanoseconds, its exited threads included (utime + stime from
 * /proc/<pid>/stat), to clock-tick precision (10 ms on Linux). For a process whose threads come and
 * go, such as LiteLLM's worker threads, where cpuNs would lose the time of a thread that ended.
 */
export function processCpuNs(pid: number): number {
  nsPerTick ??= 1e9 / Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
  // The command name (field 2) may hold spaces and parentheses; fields after it follow its last ')'.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the command name.
  return (Number(fields[11]) + Number(fields[12])) * nsPerTick;
}

/** Resident set size in bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Binds every thread of a running process to the given CPUs (taskset list syntax, e.g. "0" or "1-3"). */
export function pin(pid: number, cpus: string): void {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

/**
 * Where each process of the benchmark runs: the proxy under test alone on CPU 0, so that the load
 * generator and the upstream never take time from it; they share the rest. Undefined when the
 * machine has a single CPU or taskset is missing: then nothing is pinned.
 */
export function placement(): { front: string; upstream: string; wrk: string } | undefined {
  const n = availableParallelism();
  if (n < 2 || spawnSync("taskset", ["-V"], { stdio: "ignore" }).status !== 0) return undefined;
  if (n === 2) return { front: "0", upstream: "1", wrk: "1" };
  return { front: "0", upstream: "1", wrk: n === 3 ? "2" : `2-${n - 1}` };
}
