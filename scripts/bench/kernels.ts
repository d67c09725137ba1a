// Micro-benchmarks of the filters' hot AssemblyScript code in Node's V8 (the engine Envoy embeds):
// the admission scan of a whole request body (readLlmRequest: JSON pull parsing plus token
// estimation of every message), the token estimator alone over the messages' text, and the usage
// tracker the throttle and metrics filters run over every byte of an answer. All run from
// build/kernels.wasm, the same source the filters compile, so MB/s here is an upper bound of what a
// filter can do once Envoy's own costs (copying the body in, host calls) are added.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureKernelsBuilt, kernelsWasm } from "../../tooling/kernels.ts";
import { jsonAnswer, sseAnswer } from "./bodies.ts";
import { namedReleaseBuild } from "./named-build.ts";
import { sampleWasm } from "./wasm-samples.ts";

/** ApiShape.OpenAIChat in assembly/llm/request.ts. */
const OPENAI_CHAT = 1;
const O200K = 0;

interface Exports {
  memory: WebAssembly.Memory;
  inputBuffer(size: number): number;
  estimateTokens(ptr: number, len: number, family: number): number;
  scanRequest?(ptr: number, len: number, shape: number): number;
  trackUsage?(ptr: number, len: number, stream: number, chunk: number): number;
}

export interface KernelResult {
  kernel: "scanRequest" | "estimateTokens" | "trackUsage";
  input: string;
  bytes: number;
  /** What the kernel returned: the token estimate, a check that it read the input as intended. */
  tokens: number;
  mbPerSecond: number;
  /** Time for one call, in microseconds. */
  usPerCall: number;
}

export interface KernelInput {
  id: string;
  body: string;
}

async function instantiate(path: string): Promise<Exports> {
  const { instance } = await WebAssembly.instantiate(readFileSync(path), {
    env: {
      abort(): never {
        throw new Error("kernels.wasm aborted");
      },
    },
  });
  return instance.exports as unknown as Exports;
}

/** Runs `call` in batches for about `ms`, after a warm-up that lets V8 tier the code up; the median batch wins. */
/** µs per call: the median over batches of calls for `ms`, after a warm-up; and the last call's result. */
export function timeCalls<T>(call: () => T, ms: number): { usPerCall: number; result: T } {
  let result = call();
  const warmUntil = performance.now() + Math.max(50, ms / 4);
  while (performance.now() < warmUntil) result = call();
  let perBatch = 1;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < perBatch; i++) call();
    if (performance.now() - start > 5) break;
    perBatch *= 2;
  }
  const samples: number[] = [];
  const until = performance.now() + ms;
  while (performance.now() < until || samples.length < 3) {
    const start = performance.now();
    for (let i = 0; i < perBatch; i++) call();
    samples.push(((performance.now() - start) * 1000) / perBatch);
  }
  samples.sort((a, b) => a - b);
  return { usPerCall: samples[samples.length >> 1], result };
}

/** The text a token estimator sees in a chat body: every message's content, joined. */
function messageText(body: string): string {
  const parsed = JSON.parse(body) as { messages: { content: string }[] };
  return parsed.messages.map((m) => m.content).join("\n");
}

export async function runKernelBenchmarks(inputs: KernelInput[], msPerKernel: number): Promise<{ results: KernelResult[]; missing: string[] }> {
  ensureKernelsBuilt();
  const kernels = await instantiate(kernelsWasm);
  const missing = kernels.scanRequest ? [] : ["scanRequest (assembly/kernels/index.ts has no such export)"];
  const results: KernelResult[] = [];
  const run = (kernel: KernelResult["kernel"], input: string, bytes: Uint8Array, invoke: (ptr: number) => number) => {
    const ptr = kernels.inputBuffer(bytes.length);
    if (ptr === 0) throw new Error(`kernels.wasm refused an input of ${bytes.length} bytes`);
    new Uint8Array(kernels.memory.buffer, ptr, bytes.length).set(bytes);
    const { usPerCall, result } = timeCalls(() => invoke(ptr), msPerKernel);
    if (result < 0) throw new Error(`${kernel} rejected the ${input} input`);
    results.push({ kernel, input, bytes: bytes.length, tokens: result, usPerCall, mbPerSecond: bytes.length / usPerCall });
  };
  const encoder = new TextEncoder();
  for (const { id, body } of inputs) {
    const bytes = encoder.encode(body);
    if (kernels.scanRequest) run("scanRequest", id, bytes, (ptr) => kernels.scanRequest!(ptr, bytes.length, OPENAI_CHAT));
    const text = encoder.encode(messageText(body));
    run("estimateTokens", `${id} (message text)`, text, (ptr) => kernels.estimateTokens(ptr, text.length, O200K));
  }
  if (!kernels.trackUsage) {
    missing.push("trackUsage (assembly/kernels/index.ts has no such export)");
    return { results, missing };
  }
  // The benchmark upstream's answers. Envoy hands a body over in chunks of whatever size arrived: the
  // whole answer at once, as from the benchmark's upstream, or an event at a time, as from a model
  // that streams for real (256 bytes is about one event of the stream).
  const sse = sseAnswer();
  const noUsage = sse.split("\n\n").filter((event) => !event.includes('"usage":{')).join("\n\n");
  const answers: [string, string, boolean, number][] = [
    ["JSON answer, usage reported", jsonAnswer(), false, 0],
    ["SSE answer, usage at the end, one chunk", sse, true, 0],
    ["SSE answer, usage at the end, 256-byte chunks", sse, true, 256],
    ["SSE answer without usage, one chunk", noUsage, true, 0],
  ];
  for (const [input, body, stream, chunk] of answers) {
    const bytes = encoder.encode(body);
    run("trackUsage", input, bytes, (ptr) => kernels.trackUsage!(ptr, bytes.length, stream ? 1 : 0, chunk));
  }
  return { results, missing };
}

export interface ProfileEntry {
  /** The AssemblyScript function (file/Class#method), from the module's name section. */
  name: string;
  /** Share of the samples in which this function was running (self time). */
  share: number;
}

/**
 * Where scanRequest spends its time: a V8 CPU profile (the inspector's sampling profiler, in this
 * process) of the kernels built as release code with names kept (named-build.ts), into `dir`.
 */
export async function profileScan(body: string, dir: string, ms: number, top = 12): Promise<ProfileEntry[]> {
  const named = join(dir, "kernels-named.wasm");
  await namedReleaseBuild("assembly/kernels/index.ts", "asconfig.kernels.json", named);
  const kernels = await instantiate(named);
  if (!kernels.scanRequest) return [];
  const bytes = new TextEncoder().encode(body);
  const ptr = kernels.inputBuffer(bytes.length);
  new Uint8Array(kernels.memory.buffer, ptr, bytes.length).set(bytes);
  const scan = () => kernels.scanRequest!(ptr, bytes.length, OPENAI_CHAT);
  timeCalls(scan, 100);
  const { byFunction } = await sampleWasm(scan, ms, 100);
  const inWasm = [...byFunction.values()].reduce((sum, n) => sum + n, 0);
  return [...byFunction]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, n]) => ({ name, share: n / inWasm }));
}
