#!/usr/bin/env bash
# The dashboard in a real browser: starts three in-memory control planes (one open, one with a
# read and an operator token, one that holds expiry from the first overdue instance) and runs tools/ui-test/ui.test.mjs against them in the system's
# Chromium through playwright-core, which drives a browser but downloads none. Screenshots go to
# target/ui-screenshots (the README's picture is one of them, copied by hand).
# Usage: tools/ui-check.sh [path/to/waypost-control]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/waypost-control}
export CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser)}
. tools/lib.sh

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  stop_control_plane
  rm -rf "$work"
}
trap cleanup EXIT

read_token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
operator_token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
cat >"$work/control.toml" <<TOML
[[auth.tokens]]
name = "viewer"
sha256 = "$(echo "$read_token" | "$bin" hash-token)"
role = "read"

[[auth.tokens]]
name = "admin"
sha256 = "$(echo "$operator_token" | "$bin" hash-token)"
role = "operator"
TOML

# lib.sh tracks one control plane; the first two are stopped here.
start_control_plane "$bin"
open_addr=$CP_ADDR pids=("$CP_PID") logs=("$CP_LOG")
start_control_plane "$bin" --self-preservation-min 1
held_addr=$CP_ADDR pids+=("$CP_PID") logs+=("$CP_LOG")
start_control_plane "$bin" --config "$work/control.toml"
secured_addr=$CP_ADDR
rm -f "${logs[@]}"

(
  cd tools/ui-test
  npm ci --no-audit --no-fund --loglevel=error
  node ui.test.mjs "$open_addr" "$secured_addr" "$held_addr" "$read_token" "$operator_token" ../../target/ui-screenshots
)
