#!/usr/bin/env bash
# Issue 2's benchmark, end to end: builds the release binaries, starts the control plane in
# memory and durable (temporary data directory) and the bare-handler baseline, all on
# 127.0.0.1 port 0, runs every scenario against each with the same load, measures memory per
# instance on fresh servers, stops everything it started and prints markdown tables.
#
# Usage: tools/bench.sh   (CONCURRENCY, DURATION, MAX_REQUESTS, ROUNDS, INSTANCES, SCENARIOS override)
# Each scenario runs ROUNDS times per target, targets interleaved, and the table shows the run
# with the median req/s (all runs are printed too): on a small shared machine one run can be
# disturbed by other work, which the "other CPU" column shows.
# PIN=1 puts the servers on CPU 1 and the load generator on CPU 0 (taskset), so that the two
# do not compete for the same core; the default lets the kernel share both cores.
# Every server listens on loopback; every run is bounded in time (DURATION, plus `timeout`) and
# in count (MAX_REQUESTS, INSTANCES).
set -euo pipefail

CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
MAX_REQUESTS=${MAX_REQUESTS:-2000000}
ROUNDS=${ROUNDS:-3}
INSTANCES=${INSTANCES:-100000}
PIN=${PIN:-0}
# Each register run adds instances and the control plane holds at most 1,000,000 by default:
# ROUNDS x REGISTER_MAX must stay below that, or later runs measure 503 registry_full.
REGISTER_MAX=${REGISTER_MAX:-250000}
read -r -a SCENARIOS <<<"${SCENARIOS:-services discover heartbeat register}" # register last: it grows the registry

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
control=$root/target/release/waypost-control
load=$root/target/release/waypost-load

server_cpu=() load_cpu=()
if [ "$PIN" = 1 ]; then
    server_cpu=(taskset -c 1) load_cpu=(taskset -c 0)
fi

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
    timeout 600 "${load_cpu[@]}" "$load" "$@"
}

# The load generator is one client address sending far more writes than the default
# per-client --write-rate allows: the servers run with the limit off, to measure them.
echo "building release binaries..." >&2
cargo build --release -p waypost-control -p waypost-loadgen >&2

start memory "${server_cpu[@]}" "$control" --in-memory --listen 127.0.0.1:0 --write-rate 0
mem_url=$URL mem_pid=$PID
start durable "${server_cpu[@]}" "$control" --data-dir "$work/data" --listen 127.0.0.1:0 --write-rate 0
dur_url=$URL dur_pid=$PID
run seed --target "$mem_url"
run seed --target "$dur_url"
start baseline "${server_cpu[@]}" "$load" baseline --listen 127.0.0.1:0 --capture-from "$mem_url"
base_url=$URL base_pid=$PID

targets=("control (memory)|$mem_url|$mem_pid" "control (durable)|$dur_url|$dur_pid"
    "baseline|$base_url|$base_pid")
rows=$work/rows.md
medians=$work/medians.md
for scenario in "${SCENARIOS[@]}"; do
    for round in $(seq 1 "$ROUNDS"); do
        for target in "${targets[@]}"; do
            IFS='|' read -r label url pid <<<"$target"
            max=$MAX_REQUESTS
            [ "$scenario" = register ] && [ "$REGISTER_MAX" -lt "$max" ] && max=$REGISTER_MAX
            echo "running $scenario against $label (round $round of $ROUNDS)..." >&2
            run bench --target "$url" --pid "$pid" --label "$label" --scenario "$scenario" \
                --concurrency "$CONCURRENCY" --duration "$DURATION" \
                --max-requests "$max" --no-seed | tee -a "$rows" >&2
        done
    done
    # The median run by req/s (field 7) of each target, among the runs without errors (field
    # 6) if there are any.
    for target in "${targets[@]}"; do
        label=${target%%|*}
        grep -F "| $label | $scenario |" "$rows" >"$work/runs.md"
        awk -F'|' '$6 + 0 == 0' "$work/runs.md" >"$work/clean.md"
        [ -s "$work/clean.md" ] && cp "$work/clean.md" "$work/runs.md"
        n=$(wc -l <"$work/runs.md")
        sort -t'|' -k7 -n "$work/runs.md" | sed -n "$(((n + 1) / 2))p" >>"$medians"
    done
done
stop "$mem_pid"
stop "$dur_pid"
stop "$base_pid"

memrows=$work/memory.md
start memory-fresh "${server_cpu[@]}" "$control" --in-memory --listen 127.0.0.1:0 --write-rate 0
echo "registering $INSTANCES instances in memory..." >&2
run memory --target "$URL" --pid "$PID" --instances "$INSTANCES" --label "control (memory)" \
    --header | tee -a "$memrows" >&2
# The same reads once the registry is large: what grows with the instance count shows here.
scalerows=$work/scale.md
run seed --target "$URL"
for scenario in services discover heartbeat; do
    echo "running $scenario at $INSTANCES more instances..." >&2
    run bench --target "$URL" --pid "$PID" --label "control (memory) +$INSTANCES instances" \
        --scenario "$scenario" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --max-requests "$MAX_REQUESTS" --no-seed | tee -a "$scalerows" >&2
done
stop "$PID"
start durable-fresh "${server_cpu[@]}" "$control" --data-dir "$work/data-memory" --listen 127.0.0.1:0 --write-rate 0
echo "registering $INSTANCES instances durably..." >&2
run memory --target "$URL" --pid "$PID" --instances "$INSTANCES" --label "control (durable)" \
    | tee -a "$memrows" >&2
stop "$PID"

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -h | awk '/^Mem:/ {print $2}') RAM"
echo "Load: $CONCURRENCY keep-alive HTTP/1.1 connections, $DURATION per run (at most $MAX_REQUESTS requests), \
median of $ROUNDS runs$([ "$PIN" = 1 ] && echo ', servers pinned to CPU 1 and the load generator to CPU 0')"
echo
echo "| scenario | target | req/s | vs baseline | p50 ms | p99 ms | errors | server µs/req | load-gen µs/req | other CPU |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
# Row fields: 2 target, 3 scenario, 4 conns, 5 requests, 6 errors, 7 req/s, 8 p50, 9 p99,
# 10 server µs/req, 11 load-gen µs/req, 12 other CPU.
awk -F'|' '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    NR == FNR { if (trim($2) == "baseline") base[trim($3)] = trim($7); next }
    {
        s = trim($3); b = base[s]
        ratio = (b > 0) ? sprintf("%.0f%%", 100 * trim($7) / b) : "-"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, trim($2), trim($7),
            ratio, trim($8), trim($9), trim($6), trim($10), trim($11), trim($12)
    }' "$medians" "$medians"
if awk -F'|' '$6 + 0 > 0 { bad = 1 } END { exit !bad }' "$rows"; then
    echo
    echo "WARNING: some runs had errors (see All runs and the log above)."
fi
echo
echo "All runs:"
echo
echo "| target | scenario | conns | requests | errors | req/s | p50 ms | p99 ms | server µs/req | load-gen µs/req | other CPU |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
cat "$rows"
echo
echo "After the memory run: $INSTANCES more instances spread over 1000 more services (one run each):"
echo
echo "| target | scenario | conns | requests | errors | req/s | p50 ms | p99 ms | server µs/req | load-gen µs/req | other CPU |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
cat "$scalerows"
echo
cat "$memrows"
