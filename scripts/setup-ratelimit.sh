#!/usr/bin/env bash
# Builds envoyproxy/ratelimit (the rate limit service Istio documents for global rate limiting) from
# the Go module proxy into the project-local .ratelimit/, and checks that Redis is installed, for the
# cluster-wide budget tests. Safe to re-run: a build of the same pinned commit and Go is kept.
# Prints the service binary path last.
#
# Why a pseudo-version: the project has tagged no release since 2020, so a master commit is pinned.
# The first build takes about two minutes on 2 cores; later ones reuse Go's build cache.
# RATELIMIT_BIN names a service binary you built yourself instead.
set -euo pipefail

RATELIMIT_MODULE="github.com/envoyproxy/ratelimit"
RATELIMIT_VERSION="v1.4.1-0.20260122083618-3fb702589d36"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The service keeps its counters in Redis; the tests start their own redis-server and read
# counters with redis-cli, so both must be there before any test runs.
for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || {
    echo "setup-ratelimit: $tool is missing; install it with: apt-get install -y --no-install-recommends redis-server redis-tools" >&2
    exit 1
  }
done

if [ -n "${RATELIMIT_BIN:-}" ]; then
  [ -x "$RATELIMIT_BIN" ] || { echo "setup-ratelimit: RATELIMIT_BIN=$RATELIMIT_BIN is not an executable" >&2; exit 1; }
  echo "$RATELIMIT_BIN"
  exit 0
fi

command -v go >/dev/null || { echo "setup-ratelimit: Go is needed to build the rate limit service (https://go.dev/dl)" >&2; exit 1; }

out=.ratelimit
stamp="$RATELIMIT_VERSION $(go env GOVERSION)"
if [ -x "$out/bin/service_cmd" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$PWD/$out/bin/service_cmd"
  exit 0
fi

echo "building the rate limit service ($RATELIMIT_MODULE@$RATELIMIT_VERSION) into $out/" >&2
rm -rf "$out/bin" "$out/stamp"
mkdir -p "$out"
GOBIN="$PWD/$out/bin" go install -trimpath "$RATELIMIT_MODULE/src/service_cmd@$RATELIMIT_VERSION"
echo "$stamp" >"$out/stamp"
echo "$PWD/$out/bin/service_cmd"
