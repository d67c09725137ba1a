#!/usr/bin/env bash
# Builds Jaeger v2 (the all-in-one `jaeger` binary: an OpenTelemetry Collector with Jaeger's storage
# and query API) from the Go module proxy into the project-local .tracing/, for test/tracing.test.ts
# and the tracing benchmark. Safe to re-run: a build of the same version with the same Go is kept.
# Prints the bin directory last.
#
# Why this way: Jaeger publishes no binaries on a registry this project may use, and
# `go install github.com/jaegertracing/jaeger/cmd/jaeger@<version>` refuses the module ("The go.mod
# file for the module providing named packages contains one or more replace directives"). Built
# inside the module's own source, its go.mod is the main module and the replace applies; the source
# in Go's module cache is only read.
#
# The first build takes several minutes on 2 cores (about 1 GB of Go's build cache); later ones
# return at once. JAEGER_BIN names a binary you built yourself instead.
set -euo pipefail

JAEGER_MODULE="github.com/jaegertracing/jaeger"
JAEGER_VERSION="v1.75.0"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${JAEGER_BIN:-}" ]; then
  "$JAEGER_BIN" version >/dev/null
  dirname "$JAEGER_BIN"
  exit 0
fi

command -v go >/dev/null || { echo "setup-tracing: Go is needed to build Jaeger (https://go.dev/dl)" >&2; exit 1; }

stamp="$JAEGER_VERSION $(go env GOVERSION)"
out=.tracing
if [ -x "$out/bin/jaeger" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$PWD/$out/bin"
  exit 0
fi

echo "building jaeger ($JAEGER_MODULE@$JAEGER_VERSION) into $out/ (minutes the first time)" >&2
module_dir="$(go mod download -json "$JAEGER_MODULE@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$module_dir" ] || { echo "setup-tracing: go mod download gave no source directory for $JAEGER_MODULE@$JAEGER_VERSION" >&2; exit 1; }

rm -rf "$out/bin" "$out/stamp"
mkdir -p "$out/bin"
bin_dir="$PWD/$out/bin"
(cd "$module_dir" && go build -trimpath -o "$bin_dir/jaeger" ./cmd/jaeger) || {
  echo "setup-tracing: building $JAEGER_MODULE/cmd/jaeger@$JAEGER_VERSION failed" >&2
  exit 1
}
"$out/bin/jaeger" version >/dev/null
echo "$stamp" >"$out/stamp"
echo "$PWD/$out/bin"
