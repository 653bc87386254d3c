#!/usr/bin/env bash
# Issue 18's watch fan-out (BENCHMARKS.md): `waypost-load watchers` holds STREAMS `/watch`
# streams of one service each (services drawn Zipf-like) plus UNFILTERED streams of everything,
# over SERVICES x INSTANCES instances, makes RATE changes per second for DURATION, and reports
# per change the delay until the last stream that should have it has it, the server's CPU per
# delivered event and its memory per open stream.
#
# Phases (PHASES picks them):
#   single   each binary of LABELS (A, B: say the code before the fan-out and after) as one
#            in-memory control plane on CPU 1, the load tool on CPU 0, one after the other.
#   cluster  B as a three-node durable cluster, the streams spread over the three nodes and the
#            writes sent to the leader (no CPU pinning: three servers share the two CPUs).
#
# Usage: A=path/to/waypost-control B=path/to/other/waypost-control tools/fanout-bench.sh
#   LOAD (target/release/waypost-load) SERVICES (10000) INSTANCES (10) STREAMS (10000)
#   UNFILTERED (100) RATE (200) DURATION (30s) PHASES ("single cluster") LABELS ("A B")
#   WATCHERS_ARGS (more arguments for the tool, e.g. --blocking for blocking queries in place
#   of the streams of one service, or --xds-services K), XDS=1 (xDS streams in place of the
#   streams of one service, on each control plane's --xds-listen; single phase only)
# Each process needs STREAMS + UNFILTERED + a few hundred file descriptors: both binaries raise
# their soft limit to the hard one, which must be high enough (`ulimit -Hn`). Loopback only;
# every run is bounded in time (DURATION, `timeout`) and count (RATE x DURATION changes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${A:?set A to a waypost-control binary}" "${B:?set B to another waypost-control binary}"
LOAD=${LOAD:-target/release/waypost-load}
SERVICES=${SERVICES:-10000}
INSTANCES=${INSTANCES:-10}
STREAMS=${STREAMS:-10000}
UNFILTERED=${UNFILTERED:-100}
RATE=${RATE:-200}
DURATION=${DURATION:-30s}
read -r -a PHASES <<<"${PHASES:-single cluster}"
read -r -a LABELS <<<"${LABELS:-A B}"
need=$((STREAMS + UNFILTERED + 500))
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$need" ] || {
    echo "fanout-bench: the hard open-file limit $(ulimit -Hn) is below $need (ulimit -Hn)" >&2
    exit 2
}
. tools/lib.sh
bench_setup

# Room for every stream and the writers, above the defaults (10,000 each).
limits=(--max-watchers $((STREAMS + UNFILTERED + 100)) --max-connections $((STREAMS + UNFILTERED + 500)) --write-rate 0)
watchers() { # watchers ARGS...: one run of the load tool
    timeout 900 taskset -c "${LOAD_CPU:-0-1}" "$LOAD" watchers --services "$SERVICES" \
        --instances "$INSTANCES" --streams "$STREAMS" --unfiltered "$UNFILTERED" \
        --rate "$RATE" --duration "$DURATION" ${WATCHERS_ARGS:-} "$@"
}

for phase in "${PHASES[@]}"; do
    case $phase in
    single)
        for label in "${LABELS[@]}"; do
            echo "## single node: $label = ${!label}"
            xds=()
            if [ -n "${XDS:-}" ]; then
                xport=$(free_port)
                xds=(--xds-listen "127.0.0.1:$xport")
            fi
            taskset -c 1 "${!label}" --in-memory --listen 127.0.0.1:0 --log-format json \
                "${limits[@]}" "${xds[@]}" 2>"$work/$label.log" &
            pid=$!
            pids+=($!)
            addr=$(logged_addr "$work/$label.log")
            [ -z "${XDS:-}" ] || xds=(--xds "http://127.0.0.1:$xport")
            LOAD_CPU=0 watchers --watch "http://$addr" --write "http://$addr" --server-pid "$pid" "${xds[@]}"
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        done
        ;;
    cluster)
        echo "## three-node cluster: B = $B"
        declare -a url cpid
        for i in 1 2 3; do url[i]=127.0.0.1:$(free_port); done
        peers="1=http://${url[1]},2=http://${url[2]},3=http://${url[3]}"
        for i in 1 2 3; do
            "$B" --node-id "$i" --listen "${url[i]}" --peers "$peers" --data-dir "$work/node$i" \
                --log-format json "${limits[@]}" 2>"$work/node$i.log" &
            cpid[i]=$!
            pids+=($!)
        done
        lead=""
        for n in $(seq 300); do
            for i in 1 2 3; do
                state=$(curl -s -m 2 "http://${url[i]}/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("state",""))' 2>/dev/null || true)
                [ "$state" = leader ] && lead=$i
            done
            ready=0
            for i in 1 2 3; do
                [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://${url[i]}/ready")" = 200 ] && ready=$((ready + 1))
            done
            [ -n "$lead" ] && [ "$ready" = 3 ] && break
            sleep 0.2
        done
        [ -n "$lead" ] || { tail -n 20 "$work"/node*.log >&2; exit 1; }
        watchers --watch "http://${url[1]}" --watch "http://${url[2]}" --watch "http://${url[3]}" \
            --write "http://${url[lead]}" --server-pid "${cpid[1]}" --server-pid "${cpid[2]}" \
            --server-pid "${cpid[3]}"
        ;;
    *)
        echo "fanout-bench: unknown phase $phase" >&2
        exit 2
        ;;
    esac
done
