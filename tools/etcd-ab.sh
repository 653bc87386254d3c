#!/usr/bin/env bash
# Issue 18's durable registration and heartbeat against etcd: one durable Waypost node against
# one single-member etcd, both on loopback on this machine, in one run, so that every figure is
# a ratio of two measurements taken side by side.
#
#   load   register (Waypost: `POST /register` of a new instance; etcd: lease grant + put with
#          that lease), heartbeat (Waypost: `POST /heartbeat` of one seeded instance; etcd: one
#          keep-alive round trip on a seeded lease) and Waypost's batch heartbeat (BATCH seeded
#          instances per request, reported as instances renewed per second against etcd's
#          keep-alives per second). CONCURRENCY clients, DURATION per run, at most MAX_REQUESTS
#          (REGISTER_MAX for register); ROUNDS rounds, the two systems take turns and swap
#          which goes first every round; the median run of each is reported.
#   syncs  after the load: one more register run on each system with `strace -c` counting
#          the server's fsync/fdatasync calls, and the Raft entries it made (from /metrics),
#          to show how many registrations share an entry and a sync (strace slows both
#          servers, so only these counts mean something, not the rate).
#
# The servers run on CPU 1 and the load tools on CPU 0 (taskset), as in the other benchmarks;
# PIN=0 lets the scheduler put everything on both CPUs instead.
#
# Usage: tools/etcd-ab.sh
#   ROUNDS (3) DURATION (10s) CONCURRENCY (32) MAX_REQUESTS (2000000) REGISTER_MAX (200000)
#   BATCH (100) PHASES ("load syncs") PIN (1; 0: no taskset) SYNC_DURATION (5s) ETCD_TTL (3600: the TTL of the leases etcd's register
#   grants, as long as Waypost's registrations', so that nothing expires in either system during
#   the run) ETCD_CONNECTIONS (shared | per-client) SKIP_BUILD (1: use the binaries already
#   built) ETCD_TARGET_DIR (where tools/etcd-load is built; default CARGO_TARGET_DIR/etcd-load)
#
# Needs etcd and etcdctl (Debian: etcd-server, etcd-client), taskset, curl, and, to build
# tools/etcd-load, protoc (Debian: protobuf-compiler); strace for the syncs phase. It installs
# nothing. Every server listens on 127.0.0.1, keeps its data in a temporary directory, every
# load run is bounded in time and count, and every process it starts is killed on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-32}
MAX_REQUESTS=${MAX_REQUESTS:-2000000}
REGISTER_MAX=${REGISTER_MAX:-200000}
BATCH=${BATCH:-100}
PHASES=${PHASES:-load syncs}
ETCD_TTL=${ETCD_TTL:-3600}
ETCD_CONNECTIONS=${ETCD_CONNECTIONS:-shared}
SKIP_BUILD=${SKIP_BUILD:-0}
SYNC_DURATION=${SYNC_DURATION:-5s}
PIN=${PIN:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
ETCD_TARGET_DIR=${ETCD_TARGET_DIR:-$target_dir/etcd-load}
control=$target_dir/release/waypost-control
wload=$target_dir/release/waypost-load
eload=$ETCD_TARGET_DIR/release/etcd-load
server_cpu=(taskset -c 1)
load_cpu=(taskset -c 0)
if [ "$PIN" = 0 ]; then
    server_cpu=() load_cpu=()
fi

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

tools=(etcd etcdctl curl taskset python3)
has_phase syncs && tools+=(strace)
for tool in "${tools[@]}"; do
    if ! command -v "$tool" >/dev/null; then
        echo "etcd-ab: $tool is missing (Debian: apt-get install -y etcd-server etcd-client curl util-linux python3 strace)" >&2
        exit 1
    fi
done

if [ "$SKIP_BUILD" != 1 ]; then
    if ! command -v protoc >/dev/null; then
        echo "etcd-ab: protoc is missing, needed to build tools/etcd-load (Debian: protobuf-compiler)" >&2
        exit 1
    fi
    echo "building release binaries..." >&2
    cargo build --release -p waypost-control -p waypost-loadgen >&2
    CARGO_TARGET_DIR=$ETCD_TARGET_DIR cargo build --release --manifest-path tools/etcd-load/Cargo.toml >&2
fi
for bin in "$control" "$wload" "$eload"; do
    [ -x "$bin" ] || { echo "etcd-ab: $bin is not built" >&2; exit 1; }
done

. tools/lib.sh
bench_setup_kill etcd-ab

# wait_for WHAT CHECK...: runs CHECK every 0.1 s until it succeeds, at most 60 s.
wait_for() {
    local what=$1 n
    shift
    for n in $(seq 600); do
        "$@" && return 0
        sleep 0.1
    done
    echo "etcd-ab: $what not ready after 60 s; logs in $work" >&2
    tail -n 20 "$work"/*.log >&2 || true
    exit 1
}

# --- etcd: one member, its defaults (fsync on every WAL write), data in $work
e_url=http://127.0.0.1:$(free_port)
e_peer=http://127.0.0.1:$(free_port)
"${server_cpu[@]}" etcd --name e1 --data-dir "$work/etcd" \
    --listen-client-urls "$e_url" --advertise-client-urls "$e_url" \
    --listen-peer-urls "$e_peer" --initial-advertise-peer-urls "$e_peer" \
    --initial-cluster "e1=$e_peer" >"$work/etcd.log" 2>&1 &
e_pid=$!
pids+=("$!")

# --- Waypost: one durable node, no per-client write limit (one load generator writes for all)
w_url=http://127.0.0.1:$(free_port)
NO_COLOR=1 "${server_cpu[@]}" "$control" --listen "${w_url#http://}" --data-dir "$work/waypost" \
    --write-rate 0 >"$work/waypost.out" 2>"$work/waypost.log" &
w_pid=$!
pids+=("$!")

etcd_ready() { etcdctl --endpoints "$e_url" --command-timeout=2s endpoint health >/dev/null 2>&1; }
waypost_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$w_url/ready")" = 200 ]; }
wait_for etcd etcd_ready
wait_for Waypost waypost_ready
"${load_cpu[@]}" timeout 180 "$wload" seed --target "$w_url" >&2
"${load_cpu[@]}" timeout 180 "$eload" seed --endpoints "$e_url" >&2

rows=$work/rows.md
: >"$rows"
# Where run_waypost and run_etcd append their rows: the load phase's rows, or the syncs phase's.
sink=$rows

# run_waypost SCENARIO MAX [EXTRA...] and run_etcd SCENARIO MAX: one bench run, its row appended.
run_waypost() {
    local scenario=$1 max=$2
    shift 2
    "${load_cpu[@]}" timeout 600 "$wload" bench --target "$w_url" --pid "$w_pid" --label waypost \
        --scenario "$scenario" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --max-requests "$max" --batch "$BATCH" --no-seed "$@" | tee -a "$sink" >&2
}
run_etcd() {
    local scenario=$1 max=$2
    shift 2
    "${load_cpu[@]}" timeout 600 "$eload" bench --endpoints "$e_url" --pid "$e_pid" --label etcd \
        --scenario "$scenario" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --max-requests "$max" --ttl "$ETCD_TTL" --connections "$ETCD_CONNECTIONS" "$@" |
        tee -a "$sink" >&2
}

if has_phase load; then
    # Heartbeats first: registration grows both stores. Each round, both systems, the one that
    # went first last round goes second, so that a slow spell on the host falls on both alike.
    for scenario in heartbeat register; do
        max=$MAX_REQUESTS
        [ "$scenario" = register ] && [ "$REGISTER_MAX" -lt "$max" ] && max=$REGISTER_MAX
        for round in $(seq "$ROUNDS"); do
            order=(waypost etcd)
            [ $((round % 2)) = 0 ] && order=(etcd waypost)
            for side in "${order[@]}"; do
                echo "round $round: $scenario against $side..." >&2
                "run_$side" "$scenario" "$max"
                if [ "$scenario" = heartbeat ] && [ "$side" = waypost ]; then
                    echo "round $round: heartbeat-batch ($BATCH a request) against waypost..." >&2
                    run_waypost heartbeat-batch "$MAX_REQUESTS"
                fi
            done
        done
    done
fi

syncs=$work/syncs.txt
: >"$syncs"
if has_phase syncs; then
    # metric URL NAME: a sample's value from a Prometheus text page (0 when absent).
    metric() {
        curl -s -m 5 "$1/metrics" | awk -v n="$2" '$1 == n { v = $2 } END { printf "%d\n", v + 0 }'
    }
    # entries SIDE: Raft entries so far (Waypost: its last log index; etcd: proposals committed).
    entries() {
        case $1 in
            waypost) metric "$w_url" waypost_raft_last_log_index ;;
            etcd) metric "$e_url" etcd_server_proposals_committed_total ;;
        esac
    }
    # count_syncs SIDE PID: strace follows every thread of PID for one register run.
    count_syncs() {
        local side=$1 pid=$2 out=$work/strace-$1.txt n calls before after
        strace -f -c -e trace=fsync,fdatasync -o "$out" -p "$pid" 2>/dev/null &
        local strace_pid=$!
        sleep 1 # strace attaches to each thread
        sink=$work/sync-rows-$side.md
        before=$(entries "$side")
        DURATION=$SYNC_DURATION "run_$side" register "$REGISTER_MAX"
        after=$(entries "$side")
        kill -INT "$strace_pid" 2>/dev/null || true
        wait "$strace_pid" 2>/dev/null || true
        n=$(tail -1 "$sink" | awk -F'|' '{ gsub(/ /, "", $5); print $5 }')
        calls=$(awk '$NF == "fsync" || $NF == "fdatasync" { c += $4 } END { print c + 0 }' "$out")
        echo "$side $n $((after - before)) $calls" >>"$syncs"
    }
    echo "counting Raft entries and syncs during a register run (under strace)..." >&2
    count_syncs waypost "$w_pid"
    count_syncs etcd "$e_pid"
fi

# --- Report
median_row() { # LABEL SCENARIO: the run with the median req/s (field 7) among those rows
    local n
    grep -F "| $1 | $2 |" "$rows" >"$work/runs.md" || true
    n=$(wc -l <"$work/runs.md")
    [ "$n" -gt 0 ] || return 0
    sort -t'|' -k7 -n "$work/runs.md" | sed -n "$(((n + 1) / 2))p"
}
field() { awk -F'|' -v f="$1" '{ gsub(/^ +| +$/, "", $f); print $f }'; }
# round_ratios SCENARIO_A SCENARIO_B TIMES: Waypost's SCENARIO_A req/s times TIMES over etcd's
# SCENARIO_B req/s in each round, then their median.
round_ratios() {
    paste -d' ' <(grep -F "| waypost | $1 |" "$rows" | field 7) <(grep -F "| etcd | $2 |" "$rows" | field 7) |
        awk -v k="$3" '$2 > 0 { r[++n] = k * $1 / $2; printf "%s%.2f", (n > 1 ? ", " : ""), r[n] }
            END {
                if (n == 0) exit
                for (i = 2; i <= n; i++) for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
                printf " (median %.2f)", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
            }'
}

commit=$(git rev-parse --short HEAD)
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -h | awk '/^Mem:/ {print $2}') RAM; Waypost at $commit$(git diff --quiet HEAD || echo ' (with uncommitted changes)'), $(etcd --version | head -1)"
echo "Load: $CONCURRENCY clients, $DURATION per run (at most $MAX_REQUESTS requests, $REGISTER_MAX for register), \
median of $ROUNDS runs; $([ "$PIN" = 0 ] && echo "nothing pinned" || echo "servers on CPU 1, load tools on CPU 0"); etcd clients: $ETCD_CONNECTIONS connections, register leases ${ETCD_TTL}s"

if has_phase load; then
    echo
    echo "| operation | Waypost req/s | p50 ms | p99 ms | server µs/op | etcd req/s | p50 ms | p99 ms | server µs/op | Waypost / etcd (medians) | per-round ratios | target |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    # WAYPOST_SCENARIO ETCD_SCENARIO NAME TIMES TARGET: one line; TIMES is operations per request.
    line() {
        local w e wr er wcpu
        w=$(median_row waypost "$1")
        e=$(median_row etcd "$2")
        [ -n "$w" ] && [ -n "$e" ] || return 0
        wr=$(field 7 <<<"$w" | awk -v k="$4" '{ printf "%.0f", $1 * k }')
        er=$(field 7 <<<"$e")
        wcpu=$(field 10 <<<"$w" | awk -v k="$4" '$1 + 0 == $1 { printf "%.1f", $1 / k; next } { print }')
        echo "| $3 | $wr | $(field 8 <<<"$w") | $(field 9 <<<"$w") | $wcpu \
| $er | $(field 8 <<<"$e") | $(field 9 <<<"$e") | $(field 10 <<<"$e") \
| $(awk -v a="$wr" -v b="$er" 'BEGIN { printf (b > 0 ? "%.2fx" : "-"), a / b }') | $(round_ratios "$1" "$2" "$4") | $5 |"
    }
    line register register "register" 1 "3x"
    line heartbeat heartbeat "heartbeat" 1 "1.5x"
    line heartbeat-batch heartbeat "heartbeat, batch of $BATCH (instances/s; latency per request)" "$BATCH" "-"
    if awk -F'|' '$6 + 0 > 0 { bad = 1 } END { exit !bad }' "$rows"; then
        echo
        echo "WARNING: some runs had errors (All runs below)."
    fi
fi

if has_phase syncs && [ -s "$syncs" ]; then
    echo
    echo "Syncs during one register run each ($SYNC_DURATION, under strace -f -c):"
    echo
    echo "| system | registrations | Raft entries | registrations per entry | fsync + fdatasync calls | registrations per sync |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    awk '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, ($3 > 0 ? sprintf("%.1f", $2 / $3) : "-"),
        $4, ($4 > 0 ? sprintf("%.1f", $2 / $4) : "-") }' "$syncs"
fi

echo
echo "All runs:"
echo
echo "| target | scenario | conns | requests | errors | req/s | p50 ms | p99 ms | server µs/req | load-gen µs/req | other CPU |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
cat "$rows"
