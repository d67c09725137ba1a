// Reading a running Envoy's JSON access log (the scenarios write it to {{TMP_DIR}}/access.log).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type EnvoyHandle } from "./envoy.ts";

/**
 * The access log's entries, once it holds at least `count` of those `accept` takes (or after 10 s).
 * Envoy writes access logs every 10 s; /reopen_logs makes it write them now.
 */
export async function accessLog(envoy: EnvoyHandle, count: number, accept: (entry: any) => boolean = () => true): Promise<any[]> {
  const path = join(envoy.tmpDir, "access.log");
  const deadline = Date.now() + 10_000;
  for (;;) {
    await (await fetch(envoy.adminUrl("/reopen_logs"), { method: "POST" })).text();
    const entries = existsSync(path)
      ? readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter(accept)
      : [];
    if (entries.length >= count || Date.now() > deadline) return entries;
    await new Promise((done) => setTimeout(done, 100));
  }
}

/** An entry of a mirrored copy: Envoy appends "-shadow" to the authority's host. */
export const mirrored = (entry: any) => /-shadow(:\d+)?$/.test(entry.authority);
