// Registry credentials as `docker login` leaves them, and the WWW-Authenticate challenges that say
// how to use them.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export type Credentials =
  | { kind: "basic"; username: string; password: string }
  /** An OAuth2 refresh token, exchanged at the token endpoint (what some cloud registries store). */
  | { kind: "identity-token"; username: string; token: string };

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG || join(homedir(), ".docker"), "config.json");
}

/** "https://index.docker.io/v1/", "http://reg:5000" and "reg:5000" all name a registry host. */
function registryKey(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "").toLowerCase();
}

function sameRegistry(key: string, registry: string): boolean {
  const a = registryKey(key);
  const b = registryKey(registry);
  const hub = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);
  return a === b || (hub.has(a) && hub.has(b));
}

function fromHelper(helper: string, registry: string): Credentials | undefined {
  let out: string;
  try {
    out = execFileSync(`docker-credential-${helper}`, ["get"], { input: registry, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
  } catch (err) {
    const stdout = String((err as { stdout?: string }).stdout ?? "");
    // Helpers answer a registry they hold nothing for with this text and a non-zero exit.
    if (/credentials not found/i.test(stdout)) return undefined;
    throw new Error(`docker-credential-${helper} get failed for ${registry}: ${(err as Error).message.split("\n")[0]}`);
  }
  const { Username, Secret } = JSON.parse(out);
  if (!Secret) return undefined;
  return Username === "<token>" ? { kind: "identity-token", username: "", token: Secret } : { kind: "basic", username: Username ?? "", password: Secret };
}

/** Credentials for `registry` from the docker config, or undefined to go anonymous. */
export function credentialsFor(registry: string, configPath = dockerConfigPath()): Credentials | undefined {
  if (!existsSync(configPath)) return undefined;
  let config: any;
  try {
    config = JSON.parse(readFileSync(configPath, "utf8"));
  } catch (err) {
    throw new Error(`${configPath} is not valid JSON: ${(err as Error).message}`);
  }
  const helper = Object.entries(config.credHelpers ?? {}).find(([key]) => sameRegistry(key, registry))?.[1];
  if (typeof helper === "string") return fromHelper(helper, registry);

  const entry = Object.entries(config.auths ?? {}).find(([key]) => sameRegistry(key, registry))?.[1] as any;
  if (entry) {
    let username: string = entry.username ?? "";
    let password: string = entry.password ?? "";
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon < 0) throw new Error(`${configPath}: auths["${registry}"].auth is not base64 of user:password`);
      username = decoded.slice(0, colon);
      password = decoded.slice(colon + 1);
    }
    if (entry.identitytoken) return { kind: "identity-token", username, token: entry.identitytoken };
    if (username || password) return { kind: "basic", username, password };
  }
  // Docker Desktop and `docker login` with a store keep only an empty auths entry here.
  if (typeof config.credsStore === "string") return fromHelper(config.credsStore, registry);
  return undefined;
}

export function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, "utf8").toString("base64")}`;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="...",service="...",scope="repository:a/b:pull,push"` (commas may sit in quotes). */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2].matchAll(/([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) {
    params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
  }
  return { scheme: m[1].toLowerCase(), params };
}
