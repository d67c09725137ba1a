// Where `npm run publish` pushes to, as `docker push` spells it: registry/repository[:tag].
export interface ImageRef {
  /** As written by the user (host[:port]). */
  registry: string;
  repository: string;
  tag?: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Checked here rather than left to skopeo so that a mistyped target fails before anything is
 * pushed, with a message that says what a target looks like.
 */
export function parseReference(text: string): ImageRef {
  const rest = text.trim();
  if (rest.includes("@")) throw new Error(`"${text}": publish takes a tag, not a digest (digests follow from the content)`);
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
    if (!TAG.test(tag)) throw new Error(`"${text}": "${tag}" is not a valid tag`);
  }
  if (!path.split("/").every((c) => COMPONENT.test(c))) {
    throw new Error(`"${text}": "${path}" is not a valid repository name (lower case, digits, . _ - and /)`);
  }
  return { registry: first, repository: path, tag };
}

export function formatReference(ref: ImageRef): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}`;
}

/** Registries on this machine, which may answer over plain http or with a self-signed certificate. */
export function isLoopback(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
