// Pushes the layouts that package.ts wrote, one `skopeo copy` per image. The layouts are ours
// (their bytes decide the digests Istio pins); speaking the distribution API, its auth schemes and
// credential stores is skopeo's, a tool the container ecosystem keeps.
//
// Names. One repository per filter, both formats in it, told apart by tag:
//   <registry>/<repository>/<filter>:<tag>          the Wasm artifact (Istio's preferred format)
//   <registry>/<repository>/<filter>:<tag>-compat   the compat image (tar+gzip layer with plugin.wasm)
// A repository per filter keeps each filter's tags, access rules and retention apart, and lets a
// WasmPlugin name a filter by its repository alone; the tag defaults to package.json's version.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { repoDir } from "../envoy-bin.ts";
import { sha256Digest } from "./blob.ts";
import { type ImageKind, MEDIA, parseManifest } from "./image.ts";
import { readLayout } from "./layout.ts";
import { projectMetadata } from "./metadata.ts";
import { formatReference, isLoopback, parseReference } from "./reference.ts";

const run = promisify(execFile);

export interface PublishOptions {
  /** <registry>/<repository>[:<tag>] */
  target: string;
  /** Default every filter packaged in ociDir. */
  filters?: string[];
  /** Default build/oci. */
  ociDir?: string;
  /** Default build; a module here newer than its layout is refused. */
  buildDir?: string;
  log?: (line: string) => void;
}

export interface PublishedImage {
  filter: string;
  kind: ImageKind;
  reference: string;
  /** The manifest digest the registry holds: equal to the layout's, or publish fails. */
  digest: string;
}

/** Where skopeo looks for credentials (containers-auth.json(5)); said when a registry refuses them. */
const CREDENTIALS_HINT =
  "skopeo reads credentials from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, " +
  "then $DOCKER_CONFIG/config.json (default ~/.docker/config.json); `docker login` or `skopeo login` writes them";

async function skopeoCopy(source: string, destination: string, destinationRegistry: string, digestFile: string): Promise<void> {
  const args = ["copy", "--quiet", "--preserve-digests", "--digestfile", digestFile];
  // Loopback registries (tests, local trials) serve plain http or a self-signed certificate.
  if (isLoopback(destinationRegistry)) args.push("--dest-tls-verify=false");
  try {
    await run("skopeo", [...args, source, destination], { encoding: "utf8" });
  } catch (err) {
    const e = err as { code?: string | number; stderr?: string; message: string };
    if (e.code === "ENOENT") throw new Error("skopeo is not installed: apt-get install -y skopeo (or dnf install skopeo, brew install skopeo)");
    // skopeo wraps its one-line reason in logrus fields: keep the reason.
    const reason = /msg="((?:[^"\\]|\\.)*)"/.exec(e.stderr ?? "")?.[1].replace(/\\(.)/g, "$1") ?? (e.stderr || e.message).trim();
    const hint = /unauthorized|authentication required|denied/i.test(reason) ? `\n${CREDENTIALS_HINT}` : "";
    throw new Error(`skopeo copy ${source} ${destination}: ${reason}${hint}`);
  }
}

function packagedIn(ociDir: string): string[] {
  if (!existsSync(ociDir)) return [];
  return readdirSync(ociDir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(ociDir, e.name, "index.json")))
    .map((e) => e.name)
    .sort();
}

export async function publish(options: PublishOptions): Promise<PublishedImage[]> {
  const target = parseReference(options.target);
  const baseTag = target.tag ?? projectMetadata(repoDir).version;
  const ociDir = resolve(options.ociDir ?? join(repoDir, "build", "oci"));
  const buildDir = resolve(options.buildDir ?? join(repoDir, "build"));
  const packaged = packagedIn(ociDir);
  const filters = options.filters?.length ? options.filters : packaged;
  if (!filters.length) throw new Error(`no packaged filters in ${ociDir}: run \`npm run package\` first`);
  const missing = filters.filter((f) => !packaged.includes(f));
  if (missing.length) throw new Error(`${missing.join(", ")} not packaged in ${ociDir}: run \`npm run package\``);

  const log = options.log ?? ((line: string) => console.log(line));
  const scratch = mkdtempSync(join(tmpdir(), "llm-mesh-publish-"));
  const results: PublishedImage[] = [];
  try {
    for (const filter of filters) {
      const layoutDir = join(ociDir, filter);
      const images = readLayout(layoutDir);
      const module = join(buildDir, `${filter}.wasm`);
      const artifact = images.find((i) => i.kind === "wasm");
      if (artifact && existsSync(module)) {
        const layer = parseManifest(artifact.manifest.bytes).layers.find((l) => l.mediaType === MEDIA.wasmContent);
        if (layer?.digest !== sha256Digest(readFileSync(module))) throw new Error(`${module} changed after it was packaged; run \`npm run package\` again`);
      }
      for (const image of images) {
        const reference = formatReference({ registry: target.registry, repository: `${target.repository}/${filter}`, tag: image.kind === "wasm" ? baseTag : `${baseTag}-compat` });
        const digestFile = join(scratch, `${filter}-${image.kind}`);
        await skopeoCopy(`oci:${layoutDir}:${image.kind}`, `docker://${reference}`, target.registry, digestFile);
        // --preserve-digests already refuses a copy that would rewrite the manifest; this says so
        // in our terms should a skopeo version ever differ.
        const digest = readFileSync(digestFile, "utf8").trim();
        const expected = image.manifest.descriptor.digest;
        if (digest !== expected) throw new Error(`${reference}: skopeo pushed manifest ${digest}, the layout has ${expected}; a WasmPlugin pinning ${expected} would not load it`);
        log(`${filter.padEnd(12)} ${image.kind.padEnd(7)} ${reference}@${digest}`);
        results.push({ filter, kind: image.kind, reference, digest });
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return results;
}
