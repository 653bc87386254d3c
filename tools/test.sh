#!/usr/bin/env bash
# Every check and test of the workspace. Needs cargo; the OpenAPI validation and the generated
# clients need a Python with openapi-spec-validator and openapi-python-client (WAYPOST_PYTHON,
# default .venv/bin/python), the conformance check schemathesis in the same Python, the
# TypeScript client needs node and npm, the docs and dashboard checks need chromium (and npm),
# the fuzz smoke run cargo-fuzz, the deploy check systemd-analyze and kubernetes-validate, and
# the xDS test (control-plane/tests/xds.rs) grpcio (both in the same Python): .ci/run installs
# them. Outside CI, a missing one is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
required=${CI:-}

# Each step is timed; the times are printed at the end (also after a failure), so that a CI
# log shows where the minutes go (README: Testing).
steps=()
current=
started=$SECONDS
step() {
  local now=$SECONDS
  [ -n "$current" ] && steps+=("$(printf '%5ss  %s' $((now - started)) "$current")")
  current=$1
  started=$now
  [ -n "$1" ] && echo "== $1"
  return 0
}
times() {
  step ""
  echo "== time per step"
  printf '%s\n' "${steps[@]}"
  # The disk the build took, since a full disk has failed CI before.
  echo "== target/ holds $(du -sh target 2>/dev/null | cut -f1), $(df -h . | awk 'NR==2 {print $4}') free"
}
trap times EXIT

step "README layout names every module"
bash tools/check-layout.sh
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "build"
cargo build --workspace --bins

py=${WAYPOST_PYTHON:-.venv/bin/python}
if [ -x "$py" ] && "$py" -c 'import openapi_spec_validator' 2>/dev/null; then
  step "OpenAPI 3.1 document validates"
  "$py" -m openapi_spec_validator openapi/openapi.json
elif [ -n "$required" ]; then
  echo "openapi-spec-validator is missing" >&2; exit 1
else
  echo "== (skipped: no openapi-spec-validator; run .ci/run to install it)"
fi

if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  step "/docs renders offline"
  bash tools/check-docs.sh target/debug/waypost-control
elif [ -n "$required" ]; then
  echo "chromium is missing" >&2; exit 1
else
  echo "== (skipped: no chromium for the docs check)"
fi

if { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } && command -v npm >/dev/null; then
  step "dashboard in chromium (playwright-core)"
  bash tools/ui-check.sh target/debug/waypost-control
elif [ -n "$required" ]; then
  echo "chromium or npm is missing" >&2; exit 1
else
  echo "== (skipped: no chromium or npm for the dashboard check)"
fi

if [ -x "$py" ] && "$py" -c 'import openapi_python_client' 2>/dev/null && command -v npm >/dev/null; then
  step "generated clients (Python, TypeScript) against a live control plane"
  bash tools/generated-clients-check.sh target/debug/waypost-control
elif [ -n "$required" ]; then
  echo "openapi-python-client or npm is missing" >&2; exit 1
else
  echo "== (skipped: no openapi-python-client or npm for the generated-client check)"
fi

if [ -x "$py" ] && "$py" -c 'import schemathesis' 2>/dev/null; then
  step "API conformance (schemathesis against a live control plane)"
  bash tools/conformance.sh target/debug/waypost-control
elif [ -n "$required" ]; then
  echo "schemathesis is missing" >&2; exit 1
else
  echo "== (skipped: no schemathesis for the conformance check)"
fi

if command -v cargo-fuzz >/dev/null; then
  step "fuzz smoke (cargo fuzz, each target briefly)"
  bash tools/fuzz-smoke.sh
elif [ -n "$required" ]; then
  echo "cargo-fuzz is missing" >&2; exit 1
else
  echo "== (skipped: no cargo-fuzz for the fuzz smoke run)"
fi

step "deploy files (env variables, systemd-analyze verify, kubernetes-validate)"
bash tools/deploy-check.sh target/debug

step "curl walkthrough"
bash tools/walkthrough-check.sh target/debug/waypost-control

step "cargo test: build the tests"
cargo test --workspace --no-run
step "cargo test: run"
cargo test --workspace
