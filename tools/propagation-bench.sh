#!/usr/bin/env bash
# Issue 15's benchmark: register-to-all-applied with SIDECARS sidecars on this host. Starts a
# release control plane (durable, in a temporary directory) and SIDECARS release sidecars
# following it, each with its own --node, every listener on 127.0.0.1 port 0, reports at the
# default keep-alive; waits until GET /nodes shows them all live; then `waypost-load
# propagated` times sequential registrations with `?wait=propagated&timeout=TIMEOUT` against
# the same registration without the wait (the baseline, interleaved in the same run), and asks
# every sidecar's DNS once after each answer. Two phases:
#
#   idle   TRIALS pairs, GAP before each write: the sidecars are idle when a write arrives
#          (a deploy tool registering or draining now and then).
#   burst  BURST_TRIALS pairs back to back (no gap): the sidecars' 20 ms minimum between two
#          reports shows.
#
# Usage: tools/propagation-bench.sh
#   SIDECARS (10) TRIALS (1000) BURST_TRIALS (300; 0 skips the phase) DURATION (300s: the bound
#   of each phase) GAP (50ms) TIMEOUT (5s) STORE (durable | memory)
#   SKIP_BUILD (1: use the binaries already in CARGO_TARGET_DIR, e.g. when run under the
#   build lock) SIDECAR_BIN (another waypost-sidecar binary to run, e.g. an older build)
# Every process it starts listens on 127.0.0.1 and is killed on exit, also on failure; every
# phase is bounded in count (TRIALS) and time (DURATION, plus `timeout`).
set -euo pipefail

SIDECARS=${SIDECARS:-10}
TRIALS=${TRIALS:-1000}
BURST_TRIALS=${BURST_TRIALS:-300}
DURATION=${DURATION:-300s}
GAP=${GAP:-50ms}
TIMEOUT=${TIMEOUT:-5s}
STORE=${STORE:-durable}
SKIP_BUILD=${SKIP_BUILD:-0}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
control=$target_dir/release/waypost-control
sidecar=${SIDECAR_BIN:-$target_dir/release/waypost-sidecar}
load=$target_dir/release/waypost-load

if [ "$SKIP_BUILD" != 1 ]; then
    echo "building release binaries..." >&2
    cargo build --release -p waypost-control -p waypost-sidecar -p waypost-loadgen >&2
fi
for bin in "$control" "$sidecar" "$load"; do
    [ -x "$bin" ] || { echo "propagation-bench: $bin is missing (build it, or drop SKIP_BUILD)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/propagation-bench.XXXXXX)
pids=()
# Stops every process this script started that still runs, checking that the process id
# still belongs to a child of this shell (not a reused id).
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        if [ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$$" ]; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# listen_addr LOG FIELD PID: the address in FIELD of the JSON "listening" line in LOG, once
# it is there (at most 10 s, and only while PID runs).
listen_addr() {
    local addr=""
    for _ in $(seq 100); do
        addr=$(grep -o "\"$2\":\"127\\.0\\.0\\.1:[0-9]*\"" "$1" | head -1 | cut -d'"' -f4 || true)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        kill -0 "$3" 2>/dev/null || break
        sleep 0.1
    done
    echo "propagation-bench: no $2 address in $1:" >&2
    cat "$1" >&2
    return 1
}

store_flags=(--data-dir "$work/control")
[ "$STORE" = memory ] && store_flags=(--in-memory)
# One client address sends every write and every report: the per-client write limit is off,
# to measure the control plane and the sidecars rather than the limiter.
"$control" "${store_flags[@]}" --listen 127.0.0.1:0 --write-rate 0 --log-format json \
    2>"$work/control.log" &
cp_pid=$!
pids+=("$cp_pid")
cp=$(listen_addr "$work/control.log" http "$cp_pid")
echo "control plane at $cp (pid $cp_pid, $STORE)" >&2

sidecar_args=()
for i in $(seq -f %02g "$SIDECARS"); do
    "$sidecar" --control "http://$cp" --node "sidecar-$i" --dns-listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$work/sidecar-$i" \
        --log-format json 2>"$work/sidecar-$i.log" &
    pid=$!
    pids+=("$pid")
    sidecar_args+=(--sidecar-pid "$pid" --dns "$(listen_addr "$work/sidecar-$i.log" dns "$pid")")
done
echo "started $SIDECARS sidecars" >&2

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- control-plane data-plane model runtime client-sdk tools/loadgen ||
    commit="$commit (with uncommitted changes)"
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -h | awk '/^Mem:/ {print $2}') RAM, $(uname -sr); commit $commit"
[ -n "${SIDECAR_BIN:-}" ] && echo "Sidecars: $SIDECAR_BIN"
echo "Control plane ($STORE store) and $SIDECARS sidecars on 127.0.0.1, none pinned; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

phase() { # NAME TRIALS GAP
    echo
    echo "### Phase $1"
    echo
    timeout 900 "$load" propagated --target "http://$cp" --nodes "$SIDECARS" --pid "$cp_pid" \
        "${sidecar_args[@]}" --trials "$2" --duration "$DURATION" --gap "$3" \
        --timeout "$TIMEOUT" --prefix "$1"
}
phase idle "$TRIALS" "$GAP"
[ "$BURST_TRIALS" -gt 0 ] && phase burst "$BURST_TRIALS" 0ms

echo
warnings=$(cat "$work"/sidecar-*.log | grep -c '"level":"WARN"' || true)
echo "Sidecar log lines at WARN or above: $warnings; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
