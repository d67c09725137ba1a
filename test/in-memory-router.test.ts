// The router filter alone (build/router.wasm) in the in-memory host (tooling/in-memory-host.ts), on
// two workers as Envoy runs it: a weighted rule with a sticky key keeps each user on one target
// across requests and workers, splits users by the weights, and a new configuration with other
// weights moves only the users between the old bound and the new one. test/router.test.ts runs
// the split in the real Envoy, with fewer users.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { builtModule, InMemoryHost, jsonRequest, type Root } from "../tooling/in-memory-host.ts";

const USERS = 2000;
const split = (canary: number) => ({ sticky_header: "x-user-id", rules: [{ name: "split", weights: { primary: 100 - canary, canary } }] });

const user = (i: number) => `user-${i}`;

/** Where the router sent one request of this user, as the routing header it set says. */
function route(root: Root, id: string): string {
  const stream = root.send(jsonRequest({ model: "gpt-4o", messages: [{ role: "user", content: "hello" }] }, { "x-user-id": id }));
  assert.equal(stream.state, "forwarded");
  assert.match(stream.filterState.get("llm_mesh.router") ?? "", /^target=\w+ by=sticky rule=split$/);
  const target = stream.header("x-llm-route")!;
  stream.answer();
  return target;
}

/** Every user's target, asked on each worker in turn (another order each round); a user sent two ways fails. */
function targets(roots: Root[], rounds: number): string[] {
  const seen: string[] = [];
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < USERS; k++) {
      const i = (k * 7 + round * 13) % USERS;
      const target = route(roots[(i + round) % roots.length], user(i));
      if (seen[i] === undefined) seen[i] = target;
      else assert.equal(target, seen[i], `${user(i)}, round ${round}`);
    }
  }
  return seen;
}

const share = (list: string[], target: string) => list.filter((t) => t === target).length / list.length;

describe("llm-router's sticky split, in memory", () => {
  test("each user stays on one target across requests and workers; users split by the weights", async () => {
    const host = new InMemoryHost();
    const roots = [await host.startWorker(builtModule("router")), await host.startWorker(builtModule("router"))].map((w) => w.configure(split(10)));
    const seen = targets(roots, 3);
    assert.ok(Math.abs(share(seen, "canary") - 0.1) < 0.02, `canary share ${share(seen, "canary")}`);
    host.advancePastMetricFlush();
    assert.equal(host.metric("llm_router_requests_totalllm_target=.=canary;.;"), 3 * seen.filter((t) => t === "canary").length);
  });

  test("a weight change moves only the share between the old and the new weight", async () => {
    const host = new InMemoryHost();
    const workers = [await host.startWorker(builtModule("router")), await host.startWorker(builtModule("router"))];
    const before = targets(workers.map((w) => w.configure(split(10))), 1);
    // As Envoy applies a new configuration: a new root on every worker; the old one drains.
    for (const w of workers) [...w.roots.values()].forEach((root) => root.delete());
    const after = targets(workers.map((w) => w.configure(split(25))), 2);
    const moved = after.filter((target, i) => target !== before[i]).length / USERS;
    assert.ok(before.every((target, i) => target === "primary" || after[i] === "canary"), "no user went from the canary back to the primary");
    assert.ok(Math.abs(moved - 0.15) < 0.02, `${moved} of the users changed target`);
    assert.ok(Math.abs(share(after, "canary") - 0.25) < 0.02, `canary share ${share(after, "canary")}`);
  });
});
