// Runs the CNCF distribution registry (Debian's `docker-registry`) on a free loopback port with a
// generated config: for tests and local trials of `npm run publish`, without Docker.
import bcrypt from "bcryptjs";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Process } from "./process.ts";

export type RegistryAuth = { kind: "none" } | { kind: "htpasswd"; users: Record<string, string> };

export interface LocalRegistryOptions {
  /** Blob and manifest storage; two registries may share one (e.g. a read-only mirror). */
  storageDir: string;
  auth?: RegistryAuth;
  /** Refuses pushes: a mirror that serves what another instance stored. */
  readOnly?: boolean;
  /** Where the config, htpasswd file and log go; a fresh temp dir by default. */
  workDir?: string;
  /** The address to listen on: loopback unless another network namespace must reach it. */
  address?: string;
}

export interface LocalRegistry {
  port: number;
  /** host:port, as image references spell the registry. */
  host: string;
  url: string;
  log(): string;
  stop(): Promise<void>;
}

export function registryBinary(): string | undefined {
  const candidates = [process.env.DOCKER_REGISTRY_BIN, "/usr/bin/docker-registry", "/usr/local/bin/registry"];
  return candidates.find((c): c is string => !!c && existsSync(c));
}

export async function freePort(address = "127.0.0.1"): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok, fail) => server.once("error", fail).listen(0, address, () => ok()));
  const { port } = server.address() as { port: number };
  await new Promise((done) => server.close(done));
  return port;
}

/** An htpasswd file in the one format distribution accepts: bcrypt. */
export function htpasswd(users: Record<string, string>): string {
  return Object.entries(users)
    .map(([user, password]) => `${user}:${bcrypt.hashSync(password, 8)}\n`)
    .join("");
}

let setprivAvailable: boolean | undefined;

export async function startLocalRegistry(options: LocalRegistryOptions): Promise<LocalRegistry> {
  const bin = registryBinary();
  if (!bin) throw new Error("no docker-registry binary: `apt-get install -y docker-registry` or set DOCKER_REGISTRY_BIN");
  const workDir = options.workDir ?? mkdtempSync(join(tmpdir(), "llm-mesh-registry-"));
  mkdirSync(workDir, { recursive: true });
  mkdirSync(options.storageDir, { recursive: true });
  const address = options.address ?? "127.0.0.1";
  const port = await freePort(address);
  const auth = options.auth ?? { kind: "none" };

  const config: Record<string, unknown> = {
    version: "0.1",
    log: { level: "info", formatter: "text", accesslog: { disabled: false } },
    storage: {
      // No `cache` entry: an in-memory blob descriptor cache could hide what another instance
      // sharing this storage wrote.
      filesystem: { rootdirectory: options.storageDir },
      maintenance: { uploadpurging: { enabled: false }, readonly: { enabled: options.readOnly ?? false } },
    },
    http: { addr: `${address}:${port}`, secret: randomBytes(16).toString("hex"), headers: { "X-Content-Type-Options": ["nosniff"] } },
  };
  if (auth.kind === "htpasswd") {
    const file = join(workDir, "htpasswd");
    writeFileSync(file, htpasswd(auth.users), { mode: 0o600 });
    config.auth = { htpasswd: { realm: "llm-mesh-test", path: file } };
  }
  // JSON is YAML; distribution parses it as its usual config file.
  const configPath = join(workDir, `registry-${port}.json`);
  writeFileSync(configPath, JSON.stringify(config, null, 2));

  // The kernel kills the registry if this process dies without running its cleanup.
  setprivAvailable ??= spawnSync("setpriv", ["--version"], { stdio: "ignore" }).status === 0;
  const [cmd, args] = setprivAvailable ? ["setpriv", ["--pdeathsig", "KILL", bin, "serve", configPath]] : [bin, ["serve", configPath]];
  const registry = new Process("docker-registry", spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }), join(workDir, `registry-${port}.log`));
  const stop = () => registry.stop();

  const url = `http://${address}:${port}`;
  // 401 is an answer too: the registry is up and asks for credentials.
  const answering = async () => {
    const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200 || res.status === 401;
  };
  try {
    await registry.waitUntil(`an answer on ${url}`, answering, 10_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, host: `${address}:${port}`, url, log: () => registry.output, stop };
}
