#!/usr/bin/env bash
# Issue 18's `/services` at 10,000 services (BENCHMARKS.md): two control-plane binaries (A and
# B, say main and a branch) and the bare handler (captured bodies, no registry work: the most a
# cache could give) take turns under the same load, `/services` and `/discover/{service}` (the
# reference), so a disturbance on the host hits all three alike. Each control plane runs in
# memory and holds the read scenarios' 100 services x 10 instances plus SERVICES - 100
# services x 2 instances (`waypost-load dns-seed`).
#
# Usage: A=path/to/waypost-control B=path/to/other/waypost-control tools/services-ab.sh
#        (LOAD=path/to/waypost-load, SERVICES, ROUNDS, DURATION, CONCURRENCY, SCENARIOS override)
# Loopback only; every run is bounded in time (DURATION, `timeout`) and count (MAX_REQUESTS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${A:?set A to a waypost-control binary}" "${B:?set B to another waypost-control binary}"
LOAD=${LOAD:-target/release/waypost-load}
SERVICES=${SERVICES:-10000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-32}
MAX_REQUESTS=${MAX_REQUESTS:-2000000}
read -r -a SCENARIOS <<<"${SCENARIOS:-services discover}"
[ "$SERVICES" -gt 100 ] && [ "$SERVICES" -le 60100 ] || {
    echo "SERVICES must be 101 to 60,100" >&2
    exit 2
}
. tools/lib.sh
bench_setup

declare -A url pid
for label in A B; do
    "${!label}" --in-memory --listen 127.0.0.1:0 --write-rate 0 --log-format json \
        2>"$work/$label.log" &
    pid[$label]=$!
    pids+=($!)
    addr=$(logged_addr "$work/$label.log")
    url[$label]="http://$addr"
    timeout 300 "$LOAD" seed --target "${url[$label]}" >&2
    timeout 300 "$LOAD" dns-seed --target "${url[$label]}" --services $((SERVICES - 100)) \
        --out "$work/names-$label" >&2
done
port=$(free_port)
"$LOAD" baseline --listen "127.0.0.1:$port" --capture-from "${url[B]}" 2>"$work/baseline.log" &
pid[baseline]=$!
pids+=($!)
url[baseline]="http://127.0.0.1:$port"
wait_port "$port"
for label in A B; do
    echo "$label: ${!label}, /services body $(curl -sf "${url[$label]}/services" | wc -c) bytes" >&2
done

echo "| target | scenario | conns | requests | errors | req/s | p50 ms | p99 ms | server CPU µs/req | load CPU µs/req | other CPU |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for scenario in "${SCENARIOS[@]}"; do
    for round in $(seq "$ROUNDS"); do
        for label in A B baseline; do
            timeout 600 "$LOAD" bench --target "${url[$label]}" --pid "${pid[$label]}" \
                --label "$label" --scenario "$scenario" --concurrency "$CONCURRENCY" \
                --duration "$DURATION" --max-requests "$MAX_REQUESTS" --no-seed
        done
    done
done
