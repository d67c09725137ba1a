// `npm run -s one-module -- <kustomization> [--url <image>] [--sha256 <digest>]` prints the Istio
// deployment a kustomization under k8s/ renders, rewritten for the one module (docs/istio.md, "One
// module instead of four"; the rewrite is tooling/one-module-manifests.ts). Apply it with
// `| kubectl apply -f -`, or keep the output under version control.
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { render } from "../tooling/manifests.ts";
import { asOneModule, type ImagePin, manifestsText } from "../tooling/one-module-manifests.ts";

const USAGE = "usage: npm run -s one-module -- <kustomization dir, e.g. k8s/overlays/prod> [--url IMAGE] [--sha256 DIGEST]";

function parseArguments(argv: string[]): { dir: string; pin: ImagePin } {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { url: { type: "string" }, sha256: { type: "string" } } });
  if (positionals.length !== 1) throw new Error(USAGE);
  return { dir: positionals[0], pin: values };
}

try {
  const { dir, pin } = parseArguments(process.argv.slice(2));
  if (pin.sha256 === undefined) console.error("one-module: no --sha256, so llm-mesh keeps the all-zero placeholder digest and will not pull until you pin it");
  process.stdout.write(manifestsText(asOneModule(render(resolve(dir)), pin)));
} catch (err) {
  console.error(`one-module: ${(err as Error).message}`);
  process.exit(2);
}
