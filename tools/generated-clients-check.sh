#!/usr/bin/env bash
# Generates a Python client (openapi-python-client) and TypeScript types (openapi-typescript)
# from the committed openapi/openapi.json, and runs each example program against a fresh
# in-memory control plane: a document that a generator chokes on, or that the server does not
# honour, fails here. Both programs discover with repeated `tag` and `meta=KEY:VALUE` filters
# as the document declares them (arrays, form style, exploded), so a client generated from it
# can send them. Usage: tools/generated-clients-check.sh [path/to/waypost-control]
# Needs WAYPOST_PYTHON (default .venv/bin/python) with openapi-python-client, and node + npm.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/waypost-control}
py=${WAYPOST_PYTHON:-.venv/bin/python}
venv_bin=$(cd "$(dirname "$py")" && pwd)
. tools/lib.sh
trap stop_control_plane EXIT
start_control_plane "$bin"

echo "-- Python: generate with openapi-python-client, run examples/python/demo.py"
out=target/generated/python
rm -rf "$out"
PATH="$venv_bin:$PATH" "$venv_bin/openapi-python-client" generate \
  --path openapi/openapi.json --output-path "$out" --overwrite >/dev/null
PYTHONPATH="$out" "$py" examples/python/demo.py "http://$CP_ADDR"

echo "-- TypeScript: generate with openapi-typescript, type-check and run examples/typescript/demo.ts"
(
  cd examples/typescript
  npm ci --no-audit --no-fund --loglevel=error
  npm run -s generate
  npm run -s check
  npm run -s build
  node dist/demo.js "http://$CP_ADDR"
)
