#!/usr/bin/env bash
# Runs examples/walkthrough.sh against a fresh in-memory control plane, so the README's curl
# tour cannot rot. Usage: tools/walkthrough-check.sh path/to/waypost-control
set -euo pipefail
bin=${1:-target/debug/waypost-control}
. "$(dirname "$0")/lib.sh"
out=$(mktemp)
trap 'stop_control_plane; rm -f "$out"' EXIT
start_control_plane "$bin"
addr=$CP_ADDR
if ! bash examples/walkthrough.sh "http://$addr" >"$out" 2>&1; then
  cat "$out" >&2
  echo "walkthrough: a step failed" >&2
  exit 1
fi
grep -q 'event: upsert' "$out" || { cat "$out" >&2; echo "walkthrough: watch showed no change" >&2; exit 1; }
# The error step must show the error it is about, not a 415 from a missing content type.
grep -q '"code":"instance_not_found"' "$out" ||
  { cat "$out" >&2; echo "walkthrough: the error step showed no instance_not_found" >&2; exit 1; }
# A tour that ends well prints no curl error (the watch step's time-out is expected, not shown).
if grep -q '^curl: (' "$out"; then
  cat "$out" >&2; echo "walkthrough: curl reported an error" >&2; exit 1
fi
echo "walkthrough: every step answered as expected"
