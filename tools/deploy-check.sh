#!/usr/bin/env bash
# Checks the deploy files (deploy/) against the binaries they run:
#  1. every variable the env files, the units and the Kubernetes manifests set is one the binary
#     reads (clap's `[env: NAME]` in its --help, or RUST_LOG), and each env file names every
#     variable its binary reads, so that a new setting cannot go undocumented there;
#  2. `systemd-analyze verify` finds nothing to say about the units (a warning is a failure: it
#     exits 0 on unknown keys and bad values, so its output is what counts), and
#     `systemd-analyze security --offline` rates each at most 2.0 (both are below it now);
#  3. `kubernetes-validate --strict` (unknown fields are errors; its schemas ship in the
#     package, so no network is needed) accepts every manifest for Kubernetes 1.28, the oldest
#     that sets the pod-index label the StatefulSet takes node ids from, and for the newest
#     version the package knows; no warning either.
# Usage: tools/deploy-check.sh [DIR with waypost-control and waypost-sidecar, default
# target/debug]. A missing systemd-analyze or kubernetes-validate (in WAYPOST_PYTHON, default
# .venv/bin/python) skips its part with a note, or fails when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=$(cd "${1:-target/debug}" && pwd)
py=${WAYPOST_PYTHON:-.venv/bin/python}
required=${CI:-}
failures=0
fail() {
  echo "deploy-check: $*" >&2
  failures=$((failures + 1))
}
# Says that a part passed, when no failure was counted since `start=$failures`.
passed() {
  [ "$failures" -eq "$start" ] && echo "deploy-check: $*"
  return 0
}
missing_tool() {
  if [ -n "$required" ]; then
    fail "$1 is missing"
  else
    echo "deploy-check: (skipped: no $1)"
  fi
}

# 1. Variables. `read_vars BIN` lists what a binary reads; `set_vars FILE...` what files set:
# NAME=... lines of env files (commented out or not), Environment= lines of units, and
# ConfigMap keys and env names of manifests.
read_vars() {
  { "$bins/$1" --help | grep -oE '\[env: [A-Z0-9_]+' | cut -d' ' -f2; echo RUST_LOG; } | sort -u
}
set_vars() {
  grep -ohE '^(#?|Environment=)(WAYPOST_[A-Z0-9_]+|RUST_LOG)=|^ +(- name: )?WAYPOST_[A-Z0-9_]+:?' "$@" |
    grep -oE '(WAYPOST_[A-Z0-9_]+|RUST_LOG)' | sort -u
}
check_vars() {
  local bin=$1 envfile=$2
  shift 2
  local reads unknown undocumented
  reads=$(read_vars "$bin")
  unknown=$(comm -13 <(echo "$reads") <(set_vars "$envfile" "$@"))
  undocumented=$(comm -23 <(echo "$reads") <(set_vars "$envfile"))
  [ -z "$unknown" ] || fail "$bin does not read" $unknown "(set in $envfile $*)"
  [ -z "$undocumented" ] || fail "$envfile does not name" $undocumented "(read by $bin)"
}
start=$failures
check_vars waypost-control deploy/systemd/control.env deploy/systemd/waypost-control.service \
  deploy/kubernetes/control-plane.yaml deploy/kubernetes/cluster/peers.yaml
check_vars waypost-sidecar deploy/systemd/sidecar.env deploy/systemd/waypost-sidecar.service \
  deploy/kubernetes/sidecar.yaml
passed "env files, units and manifests set only variables the binaries read"

# 2. The units. `verify` checks that ExecStart's binary exists, and the units name where it is
# installed (/usr/local/bin), which CI does not have. It verifies copies whose ExecStart names the
# binaries just built instead; nothing else in the copies differs. (Verifying in a temporary
# root with --root does not work: systemd-analyze then also wants the root's own units, such as
# sysinit.target.)
start=$failures
if command -v systemd-analyze >/dev/null; then
  units=$(mktemp -d)
  trap 'rm -rf "$units"' EXIT
  for unit in deploy/systemd/*.service; do
    sed "s|^ExecStart=/usr/local/bin/|ExecStart=$bins/|" "$unit" >"$units/$(basename "$unit")"
  done
  if ! out=$(cd "$units" && systemd-analyze verify --man=no ./*.service 2>&1) || [ -n "$out" ]; then
    fail "systemd-analyze verify: ${out:-failed}"
  fi
  for unit in "$units"/*.service; do
    if ! systemd-analyze security --offline=true --threshold=20 "$unit" >/dev/null 2>&1; then
      fail "$(basename "$unit"): $(systemd-analyze security --offline=true "$unit" 2>&1 | tail -1)"
    fi
  done
  passed "systemd-analyze verify and security accept the units"
else
  missing_tool systemd-analyze
fi

# 3. The manifests: every YAML file but the kustomizations (not Kubernetes objects), whose
# resources and patches must exist.
start=$failures
if [ -x "$py" ] && "$py" -c 'import kubernetes_validate' 2>/dev/null; then
  manifests=$(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
  for k in $(find deploy/kubernetes -name kustomization.yaml); do
    refs=$(awk '/^[a-z]/ { section = $1 } section ~ /^(resources|patches):$/ && /^  - / { print $NF }' "$k")
    for ref in $refs; do
      [ -e "$(dirname "$k")/$ref" ] || fail "$k names $ref, which does not exist"
    done
  done
  for version in 1.28.0 ""; do
    # shellcheck disable=SC2086 # the file names have no spaces
    if ! out=$("$py" -m kubernetes_validate --strict --quiet ${version:+-k "$version"} $manifests 2>&1) ||
      [ -n "$out" ]; then
      fail "kubernetes-validate ${version:-(newest)}: ${out:-failed}"
    fi
  done
  passed "kubernetes-validate --strict accepts the manifests (1.28 and" \
    "$("$py" -m kubernetes_validate --help | grep -oE 'Defaults to [0-9.]+' | cut -d' ' -f3))"
else
  missing_tool "kubernetes-validate in $py (.ci/run installs it)"
fi

[ "$failures" -eq 0 ]
