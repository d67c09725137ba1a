// The facts an image is annotated with, read from the checkout: package.json's version, the git
// commit and where the source lives. OCI_SOURCE / OCI_REVISION override them, for CI jobs that
// build from a tarball or want to pin them.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ImageMetadata } from "./image.ts";

function git(root: string, args: string[]): string | undefined {
  try {
    const out = execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    return out || undefined;
  } catch {
    return undefined;
  }
}

/** ssh remotes (git@host:org/repo.git) become the https URL a browser can open. */
export function sourceUrlFromRemote(remote: string): string {
  const ssh = /^(?:ssh:\/\/)?git@([^:/]+)[:/](.+?)(?:\.git)?$/.exec(remote);
  if (ssh) return `https://${ssh[1]}/${ssh[2]}`;
  return remote.replace(/^git\+/, "").replace(/\.git$/, "").replace(/\/\/[^/@]*@/, "//");
}

export interface ProjectMetadata {
  name: string;
  version: string;
  revision: string;
  source: string;
}

export function projectMetadata(root: string, env: NodeJS.ProcessEnv = process.env): ProjectMetadata {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const repository = typeof pkg.repository === "string" ? pkg.repository : pkg.repository?.url;
  const remote = git(root, ["config", "--get", "remote.origin.url"]);
  const source = env.OCI_SOURCE || (repository ? sourceUrlFromRemote(repository) : remote ? sourceUrlFromRemote(remote) : "unknown");
  const revision = env.OCI_REVISION || git(root, ["rev-parse", "HEAD"]) || "unknown";
  return { name: pkg.name ?? "llm-mesh", version: pkg.version ?? "0.0.0", revision, source };
}

export function imageMetadata(project: ProjectMetadata, filter: string): ImageMetadata {
  return { title: `${project.name}-${filter}`, version: project.version, revision: project.revision, source: project.source };
}
