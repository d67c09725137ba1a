// A VM's memory stays bounded under traffic. The filters build with AssemblyScript's minimal
// runtime, whose collector runs only when the module calls it (assembly/host/collector.ts, at the
// end of host callbacks, charged by the host's bytes and per callback). Without those calls every
// request's garbage would stay: large prompts leave at least their own size (300 of 128 KB are
// 37.5 MiB), small answered requests some kilobytes in each filter, mostly outside the host's bytes.
import assert from "node:assert/strict";
import { describe } from "node:test";
import { type EnvoyHandle, envoyTest } from "../tooling/envoy.ts";
import { postJson } from "../tooling/http.ts";
import { useModelMocks } from "../tooling/model-mocks.ts";
import { asOneModule } from "../tooling/one-module.ts";
import { wasmMemory } from "../tooling/wasm-memory.ts";

const LARGE_PROMPT = "The mesh reads every prompt before a model does. ".repeat(2700);
const PARALLEL = 6;
/** Growth allowed after warm-up, all VMs together: well below what either kind of traffic leaves uncollected. */
const ALLOWED_GROWTH_KB = 4 * 1024;

type Kind = "large" | "small";

/**
 * Large prompts are refused by admission (413) once it has counted their tokens; small ones, each
 * from a new tenant, pass throttle and are answered through the router and metrics.
 */
async function send(envoy: EnvoyHandle, kind: Kind, count: number, offset: number): Promise<Record<number, number>> {
  const statuses: Record<number, number> = {};
  const content = (n: number) => (kind === "large" ? LARGE_PROMPT : `Small prompt ${n}.`);
  for (let i = 0; i < count; i += PARALLEL) {
    const batch = Array.from({ length: Math.min(PARALLEL, count - i) }, (_, k) => {
      const n = offset + i + k;
      return postJson(envoy.url("/v1/chat/completions"), { model: "gpt-4o-mini", messages: [{ role: "user", content: content(n) }], max_tokens: 8 }, { "x-tenant": `memory-${n}` });
    });
    for (const res of await Promise.all(batch)) statuses[res.status] = (statuses[res.status] ?? 0) + 1;
  }
  return statuses;
}

describe("Wasm VM memory", () => {
  const mocks = useModelMocks();

  const traffic: [Kind, number, number][] = [["large", 300, 413], ["small", 600, 200]];
  for (const [label, edit] of [["four filter modules", undefined], ["one module", asOneModule]] as const) {
    const options = () => ({
      scenario: "demo",
      vars: { ...mocks.ports() } as Record<string, never>,
      concurrency: 1,
      edit,
    });
    envoyTest(`${label}: linear memory stays bounded under large prompts and many small requests`, options, async (envoy, t) => {
      assert.ok(LARGE_PROMPT.length > 128 * 1024);
      let sent = 0;
      for (const [kind, , status] of traffic) {
        const warm = await send(envoy, kind, 30, sent);
        sent += 30;
        assert.equal(warm[status], 30, `warm-up ${kind}: ${JSON.stringify(warm)}`);
      }
      const start = wasmMemory(envoy.pid);
      assert.ok(start.vms > 0, "no Wasm VM memory found in /proc/<pid>/smaps");
      let previous = start;
      for (const [kind, count, status] of traffic) {
        const answers = await send(envoy, kind, count, sent);
        sent += count;
        assert.equal(answers[status], count, `${kind}: ${JSON.stringify(answers)}`);
        const now = wasmMemory(envoy.pid);
        t.diagnostic(`${count} ${kind} requests: ${now.vms} VMs from ${previous.sizeKb} to ${now.sizeKb} KiB`);
        previous = now;
      }
      const growthKb = previous.sizeKb - start.sizeKb;
      assert.ok(growthKb <= ALLOWED_GROWTH_KB, `the VMs grew by ${growthKb} KiB after warm-up (${start.sizeKb} → ${previous.sizeKb} KiB)`);
    });
  }
});
