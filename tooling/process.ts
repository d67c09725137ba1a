// A service process a test starts (istiod, istio-agent, Redis, the rate limit service): its output
// kept for readiness checks and failure messages, and a stop that cannot hang.
import type { ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";

/** A child process whose output is kept, for readiness checks and failure messages. */
export class Process {
  output = "";
  exited: string | undefined;
  readonly closed: Promise<void>;

  /** `logFile` gets the output as it comes, for a look while the process runs. */
  constructor(readonly name: string, readonly child: ChildProcess, logFile: string) {
    const log = createWriteStream(logFile);
    const keep = (c: Buffer) => {
      this.output += c;
      log.write(c);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    child.once("close", () => log.end());
    this.closed = new Promise((done) => {
      child.once("error", (err) => ((this.exited = `failed to start: ${err.message}`), done()));
      child.once("close", (code, signal) => ((this.exited = signal ? `killed by ${signal}` : `exited with ${code}`), done()));
    });
  }

  tail(chars = 4000): string {
    return this.output.slice(-chars);
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await this.closed;
    clearTimeout(timer);
  }

  /** Polls `ready` until it is true; throws with the output's tail when the process dies or time runs out. */
  async waitUntil(what: string, ready: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      if (this.exited) throw new Error(`${this.name} ${this.exited} before ${what}:\n${this.tail()}`);
      if (await ready().catch(() => false)) return;
      if (Date.now() > deadline) throw new Error(`${this.name}: no ${what} after ${timeoutMs / 1000} s:\n${this.tail()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export async function answers(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await res.arrayBuffer();
  return res.ok;
}
