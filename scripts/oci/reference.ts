// Image references as `docker push` spells them: registry/repository[:tag][@digest].
export interface ImageRef {
  /** As written by the user (host[:port]); also the key into the docker config's auths. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function validRepository(repository: string): boolean {
  return repository.length > 0 && repository.split("/").every((c) => COMPONENT.test(c));
}

export function validTag(tag: string): boolean {
  return TAG.test(tag);
}

export function parseReference(text: string): ImageRef {
  let rest = text.trim();
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new Error(`"${text}": ${digest} is not a sha256 digest`);
  }
  const slash = rest.indexOf("/");
  const first = slash < 0 ? "" : rest.slice(0, slash);
  // The Docker CLI reads a first component with a dot, a colon or "localhost" as a registry, and
  // anything else as a Docker Hub repository. Publishing to Docker Hub by accident is worse than
  // asking for the registry, so one is required.
  if (!first || !(first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("["))) {
    throw new Error(`"${text}" names no registry; write it as <registry>/<repository>:<tag>, e.g. ghcr.io/acme/llm-mesh:0.1.0`);
  }
  let path = rest.slice(slash + 1);
  let tag: string | undefined;
  const colon = path.lastIndexOf(":");
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!validTag(tag)) throw new Error(`"${text}": "${tag}" is not a valid tag`);
  }
  if (!validRepository(path)) throw new Error(`"${text}": "${path}" is not a valid repository name (lower case, digits, . _ - and /)`);
  // Docker Hub's official images live under library/.
  if (first === "docker.io" && !path.includes("/")) path = `library/${path}`;
  return { registry: first, repository: path, tag, digest };
}

export function formatReference(ref: ImageRef): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

/** Docker Hub's API is not served from the name people write. */
export function apiHost(registry: string): string {
  return registry === "docker.io" || registry === "index.docker.io" ? "registry-1.docker.io" : registry;
}

/** Registries on this machine, which may be spoken to over plain http. */
export function isLoopback(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
