#!/usr/bin/env bash
# The cargo fuzz targets (fuzz/): request bodies, names and tags, the sidecar's DNS name
# handling. Each runs for SECONDS_PER_TARGET (default 20) from an empty corpus and must not crash.
#
# Usage: tools/fuzz-smoke.sh   (SECONDS_PER_TARGET overrides; longer runs: cargo fuzz run TARGET -- -max_total_time=600)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; .ci/run installs it). cargo fuzz needs
# nightly compiler flags; the machine's one toolchain is stable, so RUSTC_BOOTSTRAP=1 lets this
# build (and only this build) use them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_TARGET:-20}
export RUSTC_BOOTSTRAP=1
cargo fuzz build
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in request_bodies names dns_names; do
  echo "== fuzz $target for ${seconds}s"
  if ! cargo fuzz run "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E '^Done' "$log" || true
done
