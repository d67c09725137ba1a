// `npm run publish -- <registry>/<repository>[:<tag>] [filter...] [--oci-dir DIR] [--build-dir DIR]`:
// pushes what `npm run package` wrote under build/oci/ with skopeo (tooling/oci/publish.ts says
// how images are named); no Docker engine needed. e.g. `npm run publish -- ghcr.io/acme/llm-mesh:0.1.0`
// gives ghcr.io/acme/llm-mesh/admission:0.1.0 and ghcr.io/acme/llm-mesh/admission:0.1.0-compat.
//
// Credentials are skopeo's: `docker login` / `skopeo login`, $DOCKER_CONFIG or $REGISTRY_AUTH_FILE.
// Registries on 127.0.0.1/localhost may be plain http; every other one must be https.
//
// Prints each pushed image as <reference>@<manifest digest>: the digest is what a WasmPlugin's
// `sha256` pins (without the "sha256:" prefix), the same one `npm run package` printed.
//
// --oci-dir defaults to build/oci; --build-dir (default build) is where a module newer than its
// layout is looked for, which is refused.
import { parseArgs } from "node:util";
import { publish } from "../tooling/oci/publish.ts";

try {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: { "oci-dir": { type: "string" }, "build-dir": { type: "string" } },
  });
  if (!positionals.length) throw new Error("usage: npm run publish -- <registry>/<repository>[:<tag>] [filter...]");
  await publish({ target: positionals[0], filters: positionals.slice(1), ociDir: values["oci-dir"], buildDir: values["build-dir"] });
} catch (err) {
  console.error(`publish: ${(err as Error).message}`);
  process.exit(1);
}
