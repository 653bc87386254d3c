#!/usr/bin/env bash
# Issue 18's control-plane start-up with 100,000 durable instances (BENCHMARKS.md). First the
# yardstick: how fast redb reads INSTANCES instance records back on this machine
# (`waypost-load store-read`). Then one durable control plane (A) is filled with INSTANCES
# instances (INSTANCES / PER services, `waypost-load dns-seed`) and stopped, and the binaries A
# and B take turns starting on that data directory: the time from the process's start until
# `GET /ready` answers 200, how many instances came from the stored snapshot (the rest from the
# log), and its resident memory then. Twice: with the instances in the log only, and in a
# snapshot.
# B defaults to A (one binary); give main's and a branch's to compare them on the same file.
#
# Usage: A=path/to/waypost-control [B=path/to/other/waypost-control] tools/startup-bench.sh
#        (LOAD=path/to/waypost-load; INSTANCES, PER, ROUNDS override)
# The control plane runs on CPU 1 and everything else on CPU 0 (taskset). Loopback only; each
# step is bounded (`timeout`, a deadline on every wait).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${A:?set A to a waypost-control binary}"
B=${B:-$A}
LOAD=${LOAD:-target/release/waypost-load}
INSTANCES=${INSTANCES:-100000}
PER=${PER:-10}
ROUNDS=${ROUNDS:-3}
for tool in curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "startup-bench: $tool is missing" >&2; exit 1; }
done
. tools/lib.sh
bench_setup

now_ms() { date +%s%3N; }
rss_mib() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -h | awk '/Mem:/ {print $2}') RAM"
echo "A: $A; B: $B; $INSTANCES instances in $((INSTANCES / PER)) services; $ROUNDS rounds; control plane on CPU 1"
echo
echo "redb reading $INSTANCES instance records here (best of 3, from the page cache):"
echo
taskset -c 1 timeout 300 "$LOAD" store-read --records "$INSTANCES" --per-service "$PER" --dir "$work"
echo

port=$(free_port)
# Starts binary $1 (with flags $2...) on the data directory; sets `pid`.
start() {
  local bin=$1
  shift
  taskset -c 1 "$bin" --data-dir "$work/data" --listen "127.0.0.1:$port" --write-rate 0 \
    --log-format json "$@" 2>"$work/control.log" &
  pid=$!
  pids+=($pid)
}
# Waits for /ready to answer 200 (60 s at most); prints the milliseconds since $1.
ready_after() {
  local since=$1
  for _ in $(seq 6000); do
    code=$(taskset -c 0 curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready" || true)
    if [ "$code" = 200 ]; then
      echo $(($(now_ms) - since))
      return 0
    fi
    sleep 0.01
  done
  echo "not ready after 60 s" >&2
  cat "$work/control.log" >&2
  return 1
}
# Stops it and waits until it is gone (it flushes the store first).
stop() {
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "the control plane did not stop" >&2
  return 1
}

# Two layouts of the same 100,000 instances: as the registrations left them (the log only: they
# came in about 6,500 batched entries, under the 10,000 that make a snapshot), and a snapshot of
# them with a short log after it (`--snapshot-entries 1000` while they were registered).
echo "| layout | round | binary | start to ready ms | from the snapshot | RSS MiB at ready |"
echo "| --- | ---: | --- | ---: | ---: | ---: |"
for layout in log:10000 snapshot:1000; do
  name=${layout%%:*}
  entries=${layout#*:}
  rm -rf "$work/data"
  start "$A" --snapshot-entries "$entries"
  ready_after "$(now_ms)" >/dev/null
  taskset -c 0 timeout 900 "$LOAD" dns-seed --target "http://127.0.0.1:$port" \
    --services $((INSTANCES / PER)) --per-service "$PER" --concurrency 32 --out "$work/names" >&2
  stop
  echo "$name: data directory $(du -sh "$work/data" | cut -f1)" >&2
  for round in $(seq "$ROUNDS"); do
    for label in A B; do
      started=$(now_ms)
      start "${!label}" --snapshot-entries "$entries"
      took=$(ready_after "$started")
      restored=$(grep -o '"restored":[0-9]*' "$work/control.log" | head -1 | cut -d: -f2)
      echo "| $name | $round | $label | $took | ${restored:-?} | $(rss_mib "$pid") |"
      stop
    done
  done
done
