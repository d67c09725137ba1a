#!/usr/bin/env bash
# Installs LiteLLM's proxy (PyPI, every package pinned in scripts/bench/peers/litellm-requirements.txt)
# into the project-local .peers/litellm-venv, for `npm run bench -- --peers` only: nothing else
# needs it, and it is about 800 MB. Safe to re-run: an install of the same pinned set is kept.
# Prints the litellm command's path last.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
requirements=scripts/bench/peers/litellm-requirements.txt
venv=.peers/litellm-venv

command -v python3 >/dev/null || { echo "setup-litellm: python3 is needed" >&2; exit 1; }
stamp="$(sha256sum "$requirements" | cut -d' ' -f1) $(python3 --version 2>&1)"
if [ -x "$venv/bin/litellm" ] && [ "$(cat "$venv/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$PWD/$venv/bin/litellm"
  exit 0
fi

echo "installing LiteLLM's proxy ($(grep -m1 '^litellm==' "$requirements")) into $venv/" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
echo "$stamp" >"$venv/stamp"
echo "$PWD/$venv/bin/litellm"
