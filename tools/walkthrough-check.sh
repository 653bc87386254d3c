#!/usr/bin/env bash
# Runs examples/walkthrough.sh against a fresh in-memory control plane, so the README's curl
# tour cannot rot. Usage: tools/walkthrough-check.sh path/to/waypost-control
set -euo pipefail
bin=${1:-target/debug/waypost-control}
log=$(mktemp) out=$(mktemp)
"$bin" --in-memory --listen 127.0.0.1:0 --log-format json 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log" "$out"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -o '"http":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "walkthrough: control plane did not start" >&2; exit 1; }
if ! bash examples/walkthrough.sh "http://$addr" >"$out" 2>&1; then
  cat "$out" >&2
  echo "walkthrough: a step failed" >&2
  exit 1
fi
grep -q 'event: upsert' "$out" || { cat "$out" >&2; echo "walkthrough: watch showed no change" >&2; exit 1; }
echo "walkthrough: every step answered as expected"
