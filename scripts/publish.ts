// `npm run publish -- <registry>/<repository>[:<tag>] [filter...]`: pushes the images that
// `npm run package` wrote under build/oci/ over the OCI distribution API; no Docker engine needed.
//
// Names. One repository per filter, both formats in it, told apart by tag:
//   <registry>/<repository>/<filter>:<tag>          the Wasm artifact (Istio's preferred format)
//   <registry>/<repository>/<filter>:<tag>-compat   the compat image (tar+gzip layer with plugin.wasm)
// e.g. `npm run publish -- ghcr.io/acme/llm-mesh:0.1.0` gives ghcr.io/acme/llm-mesh/admission:0.1.0.
// A repository per filter keeps each filter's tags, access rules and retention apart, and lets a
// WasmPlugin name a filter by its repository alone; the tag defaults to package.json's version.
//
// Credentials come from the docker config ($DOCKER_CONFIG/config.json, else ~/.docker/config.json:
// auths[registry].auth, or a credential helper) and serve Basic auth or the Bearer token flow,
// whichever the registry's challenge asks for. Registries on 127.0.0.1/localhost are spoken to
// over plain http; every other registry over https.
//
// Prints each pushed image as <reference>@<manifest digest>: the digest is what a WasmPlugin's
// `sha256` pins (without the "sha256:" prefix).
//
// Options: --oci-dir DIR (default build/oci), --build-dir DIR (default build; used to refuse
// layouts that are older than the module they were made from).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { credentialsFor, dockerConfigPath } from "./oci/auth.ts";
import { sha256Digest } from "./oci/blob.ts";
import { MEDIA, parseManifest } from "./oci/image.ts";
import { readLayout } from "./oci/layout.ts";
import { projectMetadata } from "./oci/metadata.ts";
import { formatReference, type ImageRef, parseReference } from "./oci/reference.ts";
import { RegistryClient } from "./oci/registry.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));

export interface PublishOptions {
  target: string;
  filters?: string[];
  ociDir?: string;
  buildDir?: string;
  log?: (line: string) => void;
}

export interface PublishedImage {
  filter: string;
  kind: "wasm" | "compat";
  reference: string;
  digest: string;
  uploaded: number;
  present: number;
}

export function tagFor(baseTag: string, kind: "wasm" | "compat"): string {
  return kind === "wasm" ? baseTag : `${baseTag}-compat`;
}

export async function publish(options: PublishOptions): Promise<PublishedImage[]> {
  const target = parseReference(options.target);
  if (target.digest) throw new Error(`"${options.target}": publish takes a tag, not a digest (digests follow from the content)`);
  const baseTag = target.tag ?? projectMetadata(root).version;
  const ociDir = resolve(options.ociDir ?? join(root, "build", "oci"));
  const buildDir = resolve(options.buildDir ?? join(root, "build"));

  const packaged = existsSync(ociDir)
    ? readdirSync(ociDir, { withFileTypes: true })
        .filter((e) => e.isDirectory() && existsSync(join(ociDir, e.name, "index.json")))
        .map((e) => e.name)
        .sort()
    : [];
  const filters = options.filters?.length ? options.filters : packaged;
  if (!filters.length) throw new Error(`no packaged filters in ${ociDir}: run \`npm run package\` first`);
  const missing = filters.filter((f) => !packaged.includes(f));
  if (missing.length) throw new Error(`${missing.join(", ")} not packaged in ${ociDir}: run \`npm run package\``);

  const credentials = credentialsFor(target.registry);
  const client = new RegistryClient(target.registry, { credentials });
  const log = options.log ?? ((line: string) => console.log(line));
  const results: PublishedImage[] = [];

  for (const filter of filters) {
    const images = readLayout(join(ociDir, filter));
    const module = join(buildDir, `${filter}.wasm`);
    const artifact = images.find((i) => i.kind === "wasm");
    if (artifact && existsSync(module)) {
      const layer = parseManifest(artifact.manifest.bytes).layers.find((l) => l.mediaType === MEDIA.wasmContent);
      if (layer?.digest !== sha256Digest(readFileSync(module))) {
        throw new Error(`${module} changed after it was packaged; run \`npm run package\` again`);
      }
    }
    const repository = `${target.repository}/${filter}`;
    for (const image of images) {
      const ref: ImageRef = { registry: target.registry, repository, tag: tagFor(baseTag, image.kind) };
      const pushed = await client.pushImage(repository, ref.tag!, image.manifest, image.blobs);
      const reference = formatReference(ref);
      log(`${filter.padEnd(12)} ${image.kind.padEnd(7)} ${reference}@${pushed.digest}  (${pushed.uploaded} blobs uploaded, ${pushed.present} already there)`);
      results.push({ filter, kind: image.kind, reference, ...pushed });
    }
  }
  return results;
}

function parseArgs(argv: string[]): PublishOptions {
  const positional: string[] = [];
  const options: Partial<PublishOptions> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--oci-dir" || arg === "--build-dir") {
      const value = argv[++i];
      if (!value) throw new Error(`${arg} needs a directory`);
      if (arg === "--oci-dir") options.ociDir = value;
      else options.buildDir = value;
    } else if (arg.startsWith("-")) {
      throw new Error(`unknown option ${arg} (known: --oci-dir DIR, --build-dir DIR)`);
    } else {
      positional.push(arg);
    }
  }
  if (!positional.length) throw new Error("usage: npm run publish -- <registry>/<repository>[:<tag>] [filter...]");
  return { ...options, target: positional[0], filters: positional.slice(1) };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    await publish(parseArgs(process.argv.slice(2)));
  } catch (err) {
    console.error(`publish: ${(err as Error).message}`);
    if (/credentials|401/.test((err as Error).message)) console.error(`publish: docker config read from ${dockerConfigPath()}`);
    process.exit(1);
  }
}
