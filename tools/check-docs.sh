#!/usr/bin/env bash
# Renders /docs in headless Chromium with no network but loopback, and checks that Swagger UI
# drew the operations from /openapi.json: proof that the docs page needs no CDN.
# Usage: tools/check-docs.sh path/to/waypost-control
set -euo pipefail
bin=${1:-target/debug/waypost-control}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "check-docs: chromium is not installed (apt-get install chromium)" >&2
  exit 1
fi
. "$(dirname "$0")/lib.sh"
profile=$(mktemp -d)
trap 'stop_control_plane; rm -rf "$profile"' EXIT
start_control_plane "$bin"
addr=$CP_ADDR
dom=$(timeout 60 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --virtual-time-budget=8000 --dump-dom "http://$addr/docs/" 2>/dev/null)
for needle in "Waypost control plane" "/discover/{service}" "/register" "/watch"; do
  if ! grep -qF "$needle" <<<"$dom"; then
    echo "check-docs: rendered /docs lacks '$needle'" >&2
    exit 1
  fi
done
echo "check-docs: /docs rendered offline with every operation"
