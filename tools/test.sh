#!/usr/bin/env bash
# Every check and test of the workspace. Needs cargo; the OpenAPI validation needs a Python
# with openapi-spec-validator (WAYPOST_PYTHON, default .venv/bin/python) and the docs check needs
# chromium: .ci/run installs both. Outside CI, a missing one is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
required=${CI:-}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build"
cargo build --workspace --bins

py=${WAYPOST_PYTHON:-.venv/bin/python}
if [ -x "$py" ] && "$py" -c 'import openapi_spec_validator' 2>/dev/null; then
  echo "== OpenAPI 3.1 document validates"
  "$py" -m openapi_spec_validator openapi/openapi.json
elif [ -n "$required" ]; then
  echo "openapi-spec-validator is missing" >&2; exit 1
else
  echo "== (skipped: no openapi-spec-validator; run .ci/run to install it)"
fi

if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  echo "== /docs renders offline"
  bash tools/check-docs.sh target/debug/waypost-control
elif [ -n "$required" ]; then
  echo "chromium is missing" >&2; exit 1
else
  echo "== (skipped: no chromium for the docs check)"
fi

echo "== curl walkthrough"
bash tools/walkthrough-check.sh target/debug/waypost-control

echo "== cargo test"
cargo test --workspace
