#!/usr/bin/env bash
# Issue 2's benchmark, end to end: builds the release binaries, starts the control plane in
# memory and durable (temporary data directory) and the bare-handler baseline, all on
# 127.0.0.1 port 0, runs every scenario against each with the same load, measures memory per
# instance on fresh servers, stops everything it started and prints markdown tables.
#
# Usage: tools/bench.sh            (CONCURRENCY, DURATION, MAX_REQUESTS, INSTANCES override)
# Every server listens on loopback; every run is bounded in time (DURATION, plus `timeout`) and
# in count (MAX_REQUESTS, INSTANCES).
set -euo pipefail

CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
MAX_REQUESTS=${MAX_REQUESTS:-2000000}
INSTANCES=${INSTANCES:-100000}
SCENARIOS=(services discover heartbeat register) # register last: it grows the registry

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
control=$root/target/release/waypost-control
load=$root/target/release/waypost-load

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: runs COMMAND in the background with stderr in $work/NAME.log, waits
# (at most 10 s) for its "listening http=127.0.0.1:PORT" line, and sets URL and PID.
start() {
    local name=$1
    shift
    NO_COLOR=1 "$@" >"$work/$name.out" 2>"$work/$name.log" &
    PID=$!
    pids+=("$PID")
    local addr=""
    for _ in $(seq 1 100); do
        addr=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$name.log" |
            grep -o -m1 'listening.*http=127\.0\.0\.1:[0-9]*' | grep -o '127\.0\.0\.1:[0-9]*' || true)
        [ -n "$addr" ] && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "bench.sh: $name did not start; its log:" >&2
        cat "$work/$name.log" >&2
        exit 1
    fi
    URL="http://$addr"
    echo "started $name at $URL (pid $PID)" >&2
}

# alive PID: running and not yet a zombie.
alive() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# stop PID: SIGTERM, SIGKILL if still running after 15 s, reap it and forget it (so that the
# exit trap never signals a reused process id).
stop() {
    local pid=$1 kept=() p
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do
        [ "$p" = "$pid" ] || kept+=("$p")
    done
    pids=("${kept[@]}")
}

# bounded: the tool stops itself at DURATION; `timeout` is the backstop.
run() {
    timeout 600 "$load" "$@"
}

echo "building release binaries..." >&2
cargo build --release -p waypost-control -p waypost-loadgen >&2

start memory "$control" --in-memory --listen 127.0.0.1:0
mem_url=$URL mem_pid=$PID
start durable "$control" --data-dir "$work/data" --listen 127.0.0.1:0
dur_url=$URL dur_pid=$PID
run seed --target "$mem_url"
run seed --target "$dur_url"
start baseline "$load" baseline --listen 127.0.0.1:0 --capture-from "$mem_url"
base_url=$URL base_pid=$PID

rows=$work/rows.md
for scenario in "${SCENARIOS[@]}"; do
    for target in "control (memory)|$mem_url|$mem_pid" "control (durable)|$dur_url|$dur_pid" \
        "baseline|$base_url|$base_pid"; do
        IFS='|' read -r label url pid <<<"$target"
        echo "running $scenario against $label..." >&2
        run bench --target "$url" --pid "$pid" --label "$label" --scenario "$scenario" \
            --concurrency "$CONCURRENCY" --duration "$DURATION" --max-requests "$MAX_REQUESTS" \
            --no-seed | tee -a "$rows" >&2
    done
done
stop "$mem_pid"
stop "$dur_pid"
stop "$base_pid"

memrows=$work/memory.md
start memory-fresh "$control" --in-memory --listen 127.0.0.1:0
echo "registering $INSTANCES instances in memory..." >&2
run memory --target "$URL" --pid "$PID" --instances "$INSTANCES" --label "control (memory)" \
    --header | tee -a "$memrows" >&2
stop "$PID"
start durable-fresh "$control" --data-dir "$work/data-memory" --listen 127.0.0.1:0
echo "registering $INSTANCES instances durably..." >&2
run memory --target "$URL" --pid "$PID" --instances "$INSTANCES" --label "control (durable)" \
    | tee -a "$memrows" >&2
stop "$PID"

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -h | awk '/^Mem:/ {print $2}') RAM"
echo "Load: $CONCURRENCY keep-alive HTTP/1.1 connections, $DURATION per run (at most $MAX_REQUESTS requests)"
echo
echo "| scenario | target | requests | errors | req/s | vs baseline | p50 ms | p99 ms | server CPU µs/req |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
# Row fields: 2 target, 3 scenario, 4 conns, 5 requests, 6 errors, 7 req/s, 8 p50, 9 p99, 10 CPU.
awk -F'|' '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    NR == FNR { if (trim($2) == "baseline") base[trim($3)] = trim($7); next }
    {
        s = trim($3); b = base[s]
        ratio = (b > 0) ? sprintf("%.0f%%", 100 * trim($7) / b) : "-"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, trim($2), trim($5),
            trim($6), trim($7), ratio, trim($8), trim($9), trim($10)
    }' "$rows" "$rows"
echo
cat "$memrows"
