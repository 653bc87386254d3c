#!/usr/bin/env bash
# Issue 13's benchmark: a three-node Waypost against a three-member etcd, both on loopback on
# this machine, in one run, so that every figure is a ratio of two measurements taken side by
# side. Three phases (PHASES picks them):
#
#   load      register (leader), heartbeat (leader and a follower), discover (leader and a
#             follower): waypost-load against Waypost, etcd-load (tools/etcd-load, etcd's gRPC
#             API) against etcd, same shapes (CONCURRENCY clients, DURATION, at most
#             MAX_REQUESTS), systems interleaved, ROUNDS rounds, the median run reported.
#   failover  TRIALS times per system, alternating: kill -9 the leader, time the first write a
#             survivor acknowledges, restart the killed member, wait until all three are healthy.
#   ab        a single durable node at BASE_REV (before cluster mode) against the current one:
#             register, heartbeat, discover, interleaved, ROUNDS rounds.
#
# Usage: tools/cluster-bench.sh
#   ROUNDS (3) DURATION (10s) CONCURRENCY (32) MAX_REQUESTS (2000000) REGISTER_MAX (200000)
#   TRIALS (20) PHASES ("load failover ab") BASE_REV (ea3f843) BASE_BIN (a waypost-control built
#   at BASE_REV; empty: built here in a temporary git worktree into BASE_TARGET_DIR)
#   ETCD_TTL (30: the TTL of the leases etcd's register grants) ETCD_CONNECTIONS (shared |
#   per-client) SKIP_BUILD (1: use the binaries already in CARGO_TARGET_DIR) CASES (the load phase's
#   operation:member pairs, default "discover:leader discover:follower heartbeat:leader
#   heartbeat:follower register:leader")
#
# Needs etcd and etcdctl (Debian: etcd-server, etcd-client) and, to build tools/etcd-load,
# protoc (Debian: protobuf-compiler); it installs nothing. Every server listens on 127.0.0.1,
# every load run is bounded in time and count, and every process it starts is killed on exit,
# also on failure.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-32}
MAX_REQUESTS=${MAX_REQUESTS:-2000000}
REGISTER_MAX=${REGISTER_MAX:-200000}
TRIALS=${TRIALS:-20}
PHASES=${PHASES:-load failover ab}
BASE_REV=${BASE_REV:-ea3f843}
BASE_BIN=${BASE_BIN:-}
ETCD_TTL=${ETCD_TTL:-30}
ETCD_CONNECTIONS=${ETCD_CONNECTIONS:-shared}
SKIP_BUILD=${SKIP_BUILD:-0}
# register last: it grows both stores. After the colon, the member the load goes to.
read -r -a cases <<<"${CASES:-discover:leader discover:follower heartbeat:leader heartbeat:follower register:leader}"

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
BASE_TARGET_DIR=${BASE_TARGET_DIR:-$target_dir/base}
control=$target_dir/release/waypost-control
wload=$target_dir/release/waypost-load
eload=$target_dir/release/etcd-load

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

for tool in etcd etcdctl curl jq; do
    if ! command -v "$tool" >/dev/null; then
        echo "cluster-bench: $tool is missing (Debian: apt-get install -y etcd-server etcd-client curl jq)" >&2
        exit 1
    fi
done

if [ "$SKIP_BUILD" != 1 ]; then
    if ! command -v protoc >/dev/null; then
        echo "cluster-bench: protoc is missing, needed to build tools/etcd-load (Debian: protobuf-compiler)" >&2
        exit 1
    fi
    echo "building release binaries..." >&2
    cargo build --release -p waypost-control -p waypost-loadgen >&2
    cargo build --release --manifest-path tools/etcd-load/Cargo.toml >&2
fi
if has_phase ab && [ -z "$BASE_BIN" ]; then
    BASE_BIN=$BASE_TARGET_DIR/release/waypost-control
    if [ ! -x "$BASE_BIN" ] || [ "$SKIP_BUILD" != 1 ]; then
        base_tree=$(mktemp -d /tmp/waypost-base.XXXXXX)
        git worktree add --detach "$base_tree" "$BASE_REV" >&2
        echo "building waypost-control at $BASE_REV..." >&2
        (cd "$base_tree" && CARGO_TARGET_DIR=$BASE_TARGET_DIR cargo build --release -p waypost-control >&2) ||
            { git worktree remove --force "$base_tree"; exit 1; }
        git worktree remove --force "$base_tree"
    fi
fi

. tools/lib.sh
bench_setup_kill cluster-bench


# --- etcd: three members on loopback, default election timeout (1000 ms) and heartbeat (100 ms)
declare -a e_client e_peer e_pid
for i in 1 2 3; do
    e_client[i]=http://127.0.0.1:$(free_port)
    e_peer[i]=http://127.0.0.1:$(free_port)
done
e_cluster="e1=${e_peer[1]},e2=${e_peer[2]},e3=${e_peer[3]}"
e_all="${e_client[1]},${e_client[2]},${e_client[3]}"
start_etcd() {
    local i=$1
    etcd --name "e$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "${e_client[i]}" --advertise-client-urls "${e_client[i]}" \
        --listen-peer-urls "${e_peer[i]}" --initial-advertise-peer-urls "${e_peer[i]}" \
        --initial-cluster "$e_cluster" --initial-cluster-token waypost-bench \
        --initial-cluster-state new >>"$work/etcd$i.log" 2>&1 &
    e_pid[i]=$!
    pids+=("$!")
}
etcd_healthy() { # all three answer a linearizable health check
    etcdctl --endpoints "$e_all" --command-timeout=2s endpoint health >/dev/null 2>&1
}

# --- Waypost: three durable nodes, default election timeout (1s), no per-client write limit
declare -a w_url w_pid
for i in 1 2 3; do w_url[i]=http://127.0.0.1:$(free_port); done
w_peers="1=${w_url[1]},2=${w_url[2]},3=${w_url[3]}"
start_waypost() {
    local i=$1
    NO_COLOR=1 "$control" --node-id "$i" --listen "${w_url[i]#http://}" --peers "$w_peers" \
        --data-dir "$work/waypost$i" --write-rate 0 >>"$work/waypost$i.out" 2>>"$work/waypost$i.log" &
    w_pid[i]=$!
    pids+=("$!")
}
waypost_healthy() { # all three ready (a leader known, own log applied)
    local i
    for i in 1 2 3; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "${w_url[i]}/ready")" = 200 ] || return 1
    done
}

# wait_for WHAT CHECK: runs CHECK every 0.2 s until it succeeds, at most 60 s.
wait_for() {
    local what=$1 n
    shift
    for n in $(seq 300); do
        "$@" && return 0
        sleep 0.2
    done
    echo "cluster-bench: $what not healthy after 60 s; logs in $work" >&2
    tail -n 20 "$work"/*.log >&2 || true
    exit 1
}

# Leaders: sets LEAD (1-3) and RTERM.
etcd_leader() {
    local out url i
    out=$(timeout 20 "$eload" leader --endpoints "$e_all")
    url=${out% *} RTERM=${out#* }
    for i in 1 2 3; do
        if [ "${e_client[i]}" = "$url" ]; then LEAD=$i; fi
    done
}
waypost_leader() {
    local i status n
    for n in $(seq 50); do
        for i in 1 2 3; do
            status=$(curl -s -m 2 "${w_url[i]}/cluster" || true)
            LEAD=$(jq -r '.leader // empty' <<<"$status" 2>/dev/null || true)
            [ -n "$LEAD" ] || continue
            # Only the leader's own word counts: a follower may still name one that is gone.
            status=$(curl -s -m 2 "${w_url[LEAD]}/cluster" || true)
            if [ "$(jq -r '.state' <<<"$status" 2>/dev/null)" = leader ]; then
                RTERM=$(jq -r '.term' <<<"$status")
                return 0
            fi
        done
        sleep 0.2
    done
    echo "cluster-bench: no Waypost node leads" >&2
    exit 1
}
other_than() { # a member that is not $1
    if [ "$1" = 1 ]; then echo 2; else echo 1; fi
}

echo "starting etcd and Waypost..." >&2
for i in 1 2 3; do start_etcd "$i"; done
for i in 1 2 3; do start_waypost "$i"; done
wait_for etcd etcd_healthy
wait_for Waypost waypost_healthy
# Seeding is idempotent; a second try covers a write that timed out while the shared disk
# stalled (each Waypost write waits for an fsync of its own, see BENCHMARKS.md).
timeout 180 "$wload" seed --target "${w_url[1]}" >&2 || timeout 180 "$wload" seed --target "${w_url[1]}" >&2
timeout 180 "$eload" seed --endpoints "$e_all" >&2 || timeout 180 "$eload" seed --endpoints "$e_all" >&2

rows=$work/rows.md
notes=$work/notes.txt
: >"$rows"
: >"$notes"
e_pids() { echo "${e_pid[1]},${e_pid[2]},${e_pid[3]}"; }
w_pids() { echo "${w_pid[1]},${w_pid[2]},${w_pid[3]}"; }

# median_row LABEL SCENARIO FILE: the run with the median req/s (field 7) among those rows.
median_row() {
    local n
    grep -F "| $1 | $2 |" "$3" >"$work/runs.md" || true
    n=$(wc -l <"$work/runs.md")
    [ "$n" -gt 0 ] || return 0
    sort -t'|' -k7 -n "$work/runs.md" | sed -n "$(((n + 1) / 2))p"
}
field() { awk -F'|' -v f="$1" '{ gsub(/^ +| +$/, "", $f); print $f }'; }
# round_ratios LABEL_A LABEL_B SCENARIO FILE: req/s of A over B in each round, then their median.
round_ratios() {
    paste -d' ' <(grep -F "| $1 | $3 |" "$4" | field 7) <(grep -F "| $2 | $3 |" "$4" | field 7) |
        awk '$2 > 0 { r[++n] = $1 / $2; printf "%s%.2f", (n > 1 ? ", " : ""), r[n] }
            END {
                if (n == 0) exit
                for (i = 2; i <= n; i++) for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
                printf " (median %.2f)", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
            }'
}

if has_phase load; then
    for case in "${cases[@]}"; do
        IFS=: read -r scenario where <<<"$case"
        max=$MAX_REQUESTS
        [ "$scenario" = register ] && [ "$REGISTER_MAX" -lt "$max" ] && max=$REGISTER_MAX
        for round in $(seq "$ROUNDS"); do
            waypost_leader
            w_lead=$LEAD w_term=$RTERM
            node=$w_lead
            [ "$where" = follower ] && node=$(other_than "$w_lead")
            echo "round $round: $scenario against Waypost node $node ($where)..." >&2
            timeout 600 "$wload" bench --target "${w_url[node]}" --pid "$(w_pids)" \
                --label "waypost ($where)" --scenario "$scenario" --concurrency "$CONCURRENCY" \
                --duration "$DURATION" --max-requests "$max" --no-seed | tee -a "$rows" >&2
            waypost_leader
            [ "$LEAD/$RTERM" = "$w_lead/$w_term" ] ||
                echo "Waypost: leader changed during $scenario ($where) round $round: $w_lead/term $w_term -> $LEAD/term $RTERM" | tee -a "$notes" >&2

            etcd_leader
            e_lead=$LEAD e_term=$RTERM
            node=$e_lead
            [ "$where" = follower ] && node=$(other_than "$e_lead")
            echo "round $round: $scenario against etcd member $node ($where)..." >&2
            timeout 600 "$eload" bench --endpoints "${e_client[node]}" --pid "$(e_pids)" \
                --label "etcd ($where)" --scenario "$scenario" --concurrency "$CONCURRENCY" \
                --duration "$DURATION" --max-requests "$max" --ttl "$ETCD_TTL" \
                --connections "$ETCD_CONNECTIONS" | tee -a "$rows" >&2
            etcd_leader
            [ "$LEAD/$RTERM" = "$e_lead/$e_term" ] ||
                echo "etcd: leader changed during $scenario ($where) round $round: $e_lead/term $e_term -> $LEAD/term $RTERM" | tee -a "$notes" >&2
            if [ "$scenario" = register ]; then
                # Its registrations' leases expire ETCD_TTL s later and etcd revokes them (at
                # most 1,000 a second): wait for that, so that no run measures it.
                echo "waiting for etcd's registration leases to expire..." >&2
                timeout 400 "$eload" wait-leases --endpoints "$e_all" --at-most 1000 --limit 360s >&2
            fi
        done
    done
fi

fo=$work/failover.txt
: >"$fo"
if has_phase failover; then
    for trial in $(seq "$TRIALS"); do
        etcd_leader
        lead=$LEAD survivors=()
        for i in 1 2 3; do
            if [ "$i" != "$lead" ]; then survivors+=("${e_client[i]}"); fi
        done
        ms=$(timeout 60 "$eload" failover --endpoints "$(
            IFS=,
            echo "${survivors[*]}"
        )" --kill-pid "${e_pid[lead]}") || ms=failed
        echo "etcd $trial $ms" | tee -a "$fo" >&2
        wait "${e_pid[lead]}" 2>/dev/null || true
        start_etcd "$lead"
        wait_for etcd etcd_healthy
        sleep 1

        waypost_leader
        lead=$LEAD targets=()
        for i in 1 2 3; do
            if [ "$i" != "$lead" ]; then targets+=(--target "${w_url[i]}"); fi
        done
        ms=$(timeout 60 "$wload" failover "${targets[@]}" --kill-pid "${w_pid[lead]}") || ms=failed
        echo "waypost $trial $ms" | tee -a "$fo" >&2
        wait "${w_pid[lead]}" 2>/dev/null || true
        start_waypost "$lead"
        wait_for Waypost waypost_healthy
        sleep 1
    done
fi

for i in 1 2 3; do
    kill -9 "${e_pid[i]}" "${w_pid[i]}" 2>/dev/null || true
done

ab=$work/ab.md
: >"$ab"
if has_phase ab; then
    # Two single durable nodes, the same settings but the binary.
    start_single() { # NAME BIN: sets URL and PID
        local port
        port=$(free_port)
        NO_COLOR=1 "$2" --listen "127.0.0.1:$port" --data-dir "$work/$1" --write-rate 0 \
            >"$work/$1.out" 2>"$work/$1.log" &
        PID=$!
        pids+=("$!")
        URL=http://127.0.0.1:$port
        local n
        for n in $(seq 100); do
            [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "$URL/ready")" = 200 ] && return 0
            sleep 0.1
        done
        echo "cluster-bench: $1 did not start" >&2
        cat "$work/$1.log" >&2
        exit 1
    }
    start_single base "$BASE_BIN"
    base_url=$URL base_pid=$PID
    start_single new "$control"
    new_url=$URL new_pid=$PID
    timeout 180 "$wload" seed --target "$base_url" >&2
    timeout 180 "$wload" seed --target "$new_url" >&2
    for scenario in discover heartbeat register; do
        max=$MAX_REQUESTS
        [ "$scenario" = register ] && [ "$REGISTER_MAX" -lt "$max" ] && max=$REGISTER_MAX
        for round in $(seq "$ROUNDS"); do
            for side in "new|$new_url|$new_pid" "base|$base_url|$base_pid"; do
                IFS='|' read -r label url pid <<<"$side"
                if [ "$label" = base ]; then label="single node at $BASE_REV"; else label="single node now"; fi
                echo "A/B round $round: $scenario against $label..." >&2
                timeout 600 "$wload" bench --target "$url" --pid "$pid" --label "$label" \
                    --scenario "$scenario" --concurrency "$CONCURRENCY" --duration "$DURATION" \
                    --max-requests "$max" --no-seed | tee -a "$ab" >&2
            done
        done
    done
fi

# --- Report
commit=$(git rev-parse --short HEAD)
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -h | awk '/^Mem:/ {print $2}') RAM; Waypost at $commit$(git diff --quiet HEAD || echo ' (with uncommitted changes)'), $(etcd --version | head -1)"
echo "Load: $CONCURRENCY clients, $DURATION per run (at most $MAX_REQUESTS requests, $REGISTER_MAX for register), \
median of $ROUNDS runs; etcd clients: $ETCD_CONNECTIONS connections, register leases ${ETCD_TTL}s"

if has_phase load; then
    echo
    echo "| operation | member | Waypost req/s | p50 ms | p99 ms | server µs/op | etcd req/s | p50 ms | p99 ms | server µs/op | Waypost / etcd (medians) | per-round ratios |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for case in "${cases[@]}"; do
        IFS=: read -r scenario where <<<"$case"
        w=$(median_row "waypost ($where)" "$scenario" "$rows")
        e=$(median_row "etcd ($where)" "$scenario" "$rows")
        [ -n "$w" ] && [ -n "$e" ] || continue
        wr=$(field 7 <<<"$w") er=$(field 7 <<<"$e")
        per_round=$(round_ratios "waypost ($where)" "etcd ($where)" "$scenario" "$rows")
        echo "| $scenario | $where | $wr | $(field 8 <<<"$w") | $(field 9 <<<"$w") | $(field 10 <<<"$w") \
| $er | $(field 8 <<<"$e") | $(field 9 <<<"$e") | $(field 10 <<<"$e") \
| $(awk -v a="$wr" -v b="$er" 'BEGIN { printf (b > 0 ? "%.2fx" : "-"), a / b }') | $per_round |"
    done
    if awk -F'|' '$6 + 0 > 0 { bad = 1 } END { exit !bad }' "$rows"; then
        echo
        echo "WARNING: some runs had errors (All runs below)."
    fi
    if [ -s "$notes" ]; then
        echo
        cat "$notes"
    fi
fi

if has_phase failover && [ -s "$fo" ]; then
    echo
    echo "Failover, $TRIALS trials each (ms from kill -9 of the leader to the first acknowledged write):"
    echo
    echo "| system | median ms | p90 ms | min ms | max ms | trials |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for sys in etcd waypost; do
        awk -v s="$sys" '$1 == s && $3 ~ /^[0-9.]+$/ { print $3 }' "$fo" | sort -n | awk -v s="$sys" '
            { v[NR] = $1 }
            END {
                if (NR == 0) exit
                m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                r = int(0.9 * NR); if (r < 0.9 * NR) r++
                printf "| %s | %.1f | %.1f | %.1f | %.1f | %d |\n", s, m, v[r], v[1], v[NR], NR
            }'
    done
    echo
    failed=$(awk '$3 == "failed"' "$fo" | wc -l)
    [ "$failed" = 0 ] || echo "$failed trials acknowledged no write within 30 s (not in the figures)."
    echo "Trials (system, trial, ms): $(awk '{ printf "%s%s %s %s", (NR > 1 ? "; " : ""), $1, $2, $3 }' "$fo")"
fi

if has_phase ab && [ -s "$ab" ]; then
    echo
    echo "Single node, $BASE_REV against now (durable, one node each, same run):"
    echo
    echo "| operation | now req/s | p50 ms | p99 ms | server µs/req | at $BASE_REV req/s | p50 ms | p99 ms | server µs/req | now / before (medians) | per-round ratios |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for scenario in discover heartbeat register; do
        n=$(median_row "single node now" "$scenario" "$ab")
        b=$(median_row "single node at $BASE_REV" "$scenario" "$ab")
        [ -n "$n" ] && [ -n "$b" ] || continue
        nr=$(field 7 <<<"$n") br=$(field 7 <<<"$b")
        per_round=$(round_ratios "single node now" "single node at $BASE_REV" "$scenario" "$ab")
        echo "| $scenario | $nr | $(field 8 <<<"$n") | $(field 9 <<<"$n") | $(field 10 <<<"$n") \
| $br | $(field 8 <<<"$b") | $(field 9 <<<"$b") | $(field 10 <<<"$b") \
| $(awk -v a="$nr" -v b="$br" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }') | $per_round |"
    done
fi

echo
echo "All runs:"
echo
echo "| target | scenario | conns | requests | errors | req/s | p50 ms | p99 ms | server µs/req | load-gen µs/req | other CPU |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
cat "$rows" "$ab"
