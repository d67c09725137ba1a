// Turns every build/<filter>.wasm into the two OCI images Istio accepts (see image.ts) and writes
// them as an OCI image layout per filter:
//
//   <out>/<filter>/index.json    ref name "wasm": the Wasm artifact; "compat": the compat image
//   <out>/<filter>/blobs/sha256/ manifests, configs and layers
//
// The same module, version and commit always give the same digests, so a digest printed here can
// be pinned in a WasmPlugin's sha256 before the image is even pushed.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { repoDir } from "../envoy-bin.ts";
import { buildImages, type ImageKind } from "./image.ts";
import { writeLayout } from "./layout.ts";
import { imageMetadata, projectMetadata } from "./metadata.ts";

/** Node-side modules that are built next to the filters but never loaded by Envoy. */
const NOT_FILTERS = new Set(["kernels"]);

export interface PackagedFilter {
  filter: string;
  dir: string;
  images: { kind: ImageKind; digest: string }[];
}

export interface PackageOptions {
  /** Default build/. */
  buildDir?: string;
  /** Default <buildDir>/oci. */
  outDir?: string;
  /** Default every filter module in buildDir. */
  filters?: string[];
}

function filtersIn(buildDir: string): string[] {
  if (!existsSync(buildDir)) return [];
  return readdirSync(buildDir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".wasm"))
    .map((e) => basename(e.name, ".wasm"))
    .filter((name) => !NOT_FILTERS.has(name))
    .sort();
}

export function packageFilters(options: PackageOptions = {}): PackagedFilter[] {
  const buildDir = resolve(options.buildDir ?? join(repoDir, "build"));
  const outDir = resolve(options.outDir ?? join(buildDir, "oci"));
  const available = filtersIn(buildDir);
  const filters = options.filters?.length ? options.filters : available;
  if (!filters.length) throw new Error(`no filter modules in ${buildDir}: run \`npm run build\` first`);
  const unknown = filters.filter((f) => !available.includes(f));
  if (unknown.length) throw new Error(`no ${unknown.map((f) => `${f}.wasm`).join(", ")} in ${buildDir} (have: ${available.join(", ") || "none"})`);

  const project = projectMetadata(repoDir);
  return filters.map((filter) => {
    const wasm = readFileSync(join(buildDir, `${filter}.wasm`));
    let images;
    try {
      images = buildImages(wasm, imageMetadata(project, filter));
    } catch (err) {
      throw new Error(`${filter}.wasm: ${(err as Error).message}`);
    }
    const dir = join(outDir, filter);
    writeLayout(dir, images);
    return { filter, dir, images: images.map((image) => ({ kind: image.kind, digest: image.manifest.descriptor.digest })) };
  });
}
