// `npm run package -- [--build-dir DIR] [--out-dir DIR] [filter...]`: writes build/<filter>.wasm
// as OCI image layouts under build/oci/ (tooling/oci/package.ts) and prints each image's digest.
// --build-dir defaults to build, --out-dir to <build-dir>/oci; no filter names means all of them.
import { parseArgs } from "node:util";
import { packageFilters } from "../tooling/oci/package.ts";

try {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: { "build-dir": { type: "string" }, "out-dir": { type: "string" } },
  });
  for (const packaged of packageFilters({ buildDir: values["build-dir"], outDir: values["out-dir"], filters: positionals })) {
    for (const image of packaged.images) {
      console.log(`${packaged.filter.padEnd(12)} ${image.kind.padEnd(7)} ${image.digest}  ${packaged.dir}`);
    }
  }
} catch (err) {
  console.error(`package: ${(err as Error).message}`);
  process.exit(1);
}
