// `npm run package`: turns every build/<filter>.wasm into the two OCI images Istio accepts (see
// scripts/oci/image.ts) and writes them as an OCI image layout per filter:
//
//   build/oci/<filter>/index.json    ref name "wasm": the Wasm artifact; "compat": the compat image
//   build/oci/<filter>/blobs/sha256/ manifests, configs and layers
//
// The same module, version and commit always give the same digests, so a digest printed here can
// be pinned in a WasmPlugin's sha256 before the image is even pushed.
//
// Options: --build-dir DIR (default build), --out-dir DIR (default <build-dir>/oci), and filter
// names to package only those.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildImages, type ImageKind } from "./oci/image.ts";
import { writeLayout } from "./oci/layout.ts";
import { imageMetadata, projectMetadata } from "./oci/metadata.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));

/** Node-side modules that are built next to the filters but never loaded by Envoy. */
const NOT_FILTERS = new Set(["kernels"]);

export interface PackagedImage {
  kind: ImageKind;
  digest: string;
  size: number;
}

export interface PackagedFilter {
  filter: string;
  dir: string;
  images: PackagedImage[];
}

export interface PackageOptions {
  buildDir?: string;
  outDir?: string;
  filters?: string[];
}

export function filtersIn(buildDir: string): string[] {
  if (!existsSync(buildDir)) return [];
  return readdirSync(buildDir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".wasm"))
    .map((e) => basename(e.name, ".wasm"))
    .filter((name) => !NOT_FILTERS.has(name))
    .sort();
}

export function packageFilters(options: PackageOptions = {}): PackagedFilter[] {
  const buildDir = resolve(options.buildDir ?? join(root, "build"));
  const outDir = resolve(options.outDir ?? join(buildDir, "oci"));
  const available = filtersIn(buildDir);
  const filters = options.filters?.length ? options.filters : available;
  if (!filters.length) throw new Error(`no filter modules in ${buildDir}: run \`npm run build\` first`);
  const unknown = filters.filter((f) => !available.includes(f));
  if (unknown.length) throw new Error(`no ${unknown.map((f) => `${f}.wasm`).join(", ")} in ${buildDir} (have: ${available.join(", ") || "none"})`);

  const project = projectMetadata(root);
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
    return {
      filter,
      dir,
      images: images.map((image) => ({ kind: image.kind, digest: image.manifest.descriptor.digest, size: image.manifest.descriptor.size })),
    };
  });
}

function parseArgs(argv: string[]): PackageOptions {
  const options: PackageOptions = { filters: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--build-dir" || arg === "--out-dir") {
      const value = argv[++i];
      if (!value) throw new Error(`${arg} needs a directory`);
      if (arg === "--build-dir") options.buildDir = value;
      else options.outDir = value;
    } else if (arg.startsWith("-")) {
      throw new Error(`unknown option ${arg} (known: --build-dir DIR, --out-dir DIR)`);
    } else {
      options.filters!.push(arg);
    }
  }
  return options;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    for (const packaged of packageFilters(parseArgs(process.argv.slice(2)))) {
      for (const image of packaged.images) {
        console.log(`${packaged.filter.padEnd(12)} ${image.kind.padEnd(7)} ${image.digest}  ${packaged.dir}`);
      }
    }
  } catch (err) {
    console.error(`package: ${(err as Error).message}`);
    process.exit(1);
  }
}
