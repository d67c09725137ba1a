#!/usr/bin/env bash
# Builds Istio's control plane (pilot-discovery, i.e. istiod) and its proxy agent (pilot-agent) from
# the Go module proxy into the project-local .istio/, for test/istio.test.ts. Safe to re-run: a build
# of the same pinned commit and patches is kept. Prints the bin directory last.
#
# Why from source: Istio publishes no binaries on a registry this project may use, and the Go module
# proxy serves istio.io/istio only as master pseudo-versions, so one is pinned here. Two small fixes
# (scripts/istio/*.patch, see scripts/istio/README.md) let istiod run from files with no Kubernetes;
# they are applied to a copy of the module source, never to Go's module cache.
#
# The first build takes 8-10 minutes on 2 cores and about 3 GB of Go's build cache; later ones reuse
# that cache (a fresh clone relinks in about a minute). ISTIO_BIN_DIR names binaries you built
# yourself instead.
set -euo pipefail

ISTIO_MODULE="istio.io/istio"
ISTIO_VERSION="v0.0.0-20260827124520-eed52ebb66ad"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${ISTIO_BIN_DIR:-}" ]; then
  "$ISTIO_BIN_DIR/pilot-discovery" version --short >/dev/null
  "$ISTIO_BIN_DIR/pilot-agent" version --short >/dev/null
  echo "$ISTIO_BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { echo "setup-istio: Go is needed to build istiod and istio-agent (https://go.dev/dl)" >&2; exit 1; }

patches=(scripts/istio/*.patch)
stamp="$ISTIO_VERSION $(cat "${patches[@]}" | sha256sum | cut -c1-16) $(go env GOVERSION)"
out=.istio
if [ -x "$out/bin/pilot-discovery" ] && [ -x "$out/bin/pilot-agent" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$PWD/$out/bin"
  exit 0
fi

echo "building istiod and istio-agent ($ISTIO_MODULE@$ISTIO_VERSION) into $out/ (minutes the first time)" >&2
module_dir="$(go mod download -json "$ISTIO_MODULE@$ISTIO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$module_dir" ] || { echo "setup-istio: go mod download gave no source directory for $ISTIO_MODULE@$ISTIO_VERSION" >&2; exit 1; }

rm -rf "$out/src" "$out/bin" "$out/stamp"
mkdir -p "$out"
cp -r "$module_dir" "$out/src"
chmod -R u+w "$out/src"
for p in "${patches[@]}"; do
  patch --quiet --forward --strip=1 --directory="$out/src" <"$p"
done
(cd "$out/src" && go build -trimpath -o "../bin/" ./pilot/cmd/pilot-discovery ./pilot/cmd/pilot-agent)
# The agent renders Envoy's bootstrap from Istio's own template, shipped in the same source.
mkdir -p "$out/bootstrap"
cp "$out/src/tools/packaging/common/envoy_bootstrap.json" "$out/bootstrap/envoy_bootstrap_tmpl.json"
rm -rf "$out/src"
echo "$stamp" >"$out/stamp"
echo "$PWD/$out/bin"
