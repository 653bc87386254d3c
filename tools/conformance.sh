#!/usr/bin/env bash
# API conformance (issue 6): schemathesis against a live control plane and the OpenAPI document
# it serves, every operation, in its examples, coverage and fuzzing phases. Checks: no server
# errors, status codes, content types, response headers and response bodies (the SSE stream's
# events too) as the document says. Fails on any failure or error, or when fewer than
# MIN_CASES cases ran.
#
# A second, shorter pass (AUTH_EXAMPLES, default 20) runs with authorization on and a read
# token, so that 403 answers to writes are checked against the document too.
#
# Usage: tools/conformance.sh [BIN]   (BIN: the control plane, default target/debug/waypost-control)
# Needs schemathesis in WAYPOST_PYTHON's environment (.ci/run installs it). EXAMPLES (per
# operation and phase, default 150), MIN_CASES (1000) and SEED override; the default seed is
# fixed so that CI runs the same cases each time (give SEED=random to explore).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/waypost-control}
py=${WAYPOST_PYTHON:-.venv/bin/python}
st="$(dirname "$py")/schemathesis"
examples=${EXAMPLES:-150}
min_cases=${MIN_CASES:-1000}
seed=${SEED:-20261123}

. tools/lib.sh
trap stop_control_plane EXIT
# Blocking queries are held at most 1 s here: a generated index that equals the current
# revision is a legitimate wait, not something to spend the run on.
start_control_plane "$bin" --max-query-time 1s

seed_args=(--seed "$seed")
[ "$seed" = random ] && seed_args=()
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

# run LABEL EXAMPLES [schemathesis options...]: one pass against $CP_ADDR; sets `cases`.
run() {
  local label=$1 n=$2 out status=0
  shift 2
  out=$(mktemp)
  "$st" --config-file tools/schemathesis.toml --no-color run "http://$CP_ADDR/openapi.json" \
    --checks "$checks" --phases examples,coverage,fuzzing --max-examples "$n" \
    "${seed_args[@]}" "$@" >"$out" 2>&1 || status=$?
  echo "== conformance, $label"
  tail -n 25 "$out"
  cases=$(grep -oE '[0-9]+ generated' "$out" | tail -1 | cut -d' ' -f1)
  rm -f "$out"
  if [ "$status" -ne 0 ]; then
    echo "conformance ($label): schemathesis reported failures or errors (exit $status)" >&2
    exit 1
  fi
}

run "authorization off" "$examples"
if [ -z "$cases" ] || [ "$cases" -lt "$min_cases" ]; then
  echo "conformance: only ${cases:-no} cases ran; at least $min_cases are required" >&2
  exit 1
fi
open_cases=$cases

# Authorization on, every request with a read token: reads answer, writes are 403 problems,
# and both must be as the document says.
stop_control_plane
token=conformance-read-token
config=$(mktemp --suffix .toml)
trap 'stop_control_plane; rm -f "$config"' EXIT
printf '[[auth.tokens]]\nname = "conformance"\nsha256 = "%s"\nrole = "read"\n' \
  "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" >"$config"
start_control_plane "$bin" --max-query-time 1s --config "$config"
run "authorization on, read token" "${AUTH_EXAMPLES:-20}" --header "Authorization: Bearer $token"
echo "conformance: $open_cases cases with authorization off, $cases with a read token, 0 failures"
