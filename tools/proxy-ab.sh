#!/usr/bin/env bash
# Interleaved A/B of two sidecar binaries and haproxy, for proxy changes (BENCHMARKS.md): they
# take turns under the same wrk load, so a disturbance on the host hits all three alike.
# Per round and proxy: req/s, p50, p99 (wrk), CPU time per request with its user part
# (utime + stime from /proc/PID/stat) and context switches per request (/proc/PID/task/*/status).
#
# Usage: A=path/to/waypost-sidecar B=path/to/other/waypost-sidecar tools/proxy-ab.sh
#        (ROUNDS, DURATION seconds, CONNS, ORDER="A B H" override)
# ORDER may also name AT and HT: sidecar A's TCP route and haproxy in tcp mode to the same
# backend. They carry the same HTTP bytes without reading them, so their CPU per request is
# the floor for a proxy that moves each request over a second connection.
# Needs wrk and haproxy. The backend and the proxies run on CPU 1, wrk on CPU 0; loopback only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${A:?set A to a waypost-sidecar binary}" "${B:?set B to another waypost-sidecar binary}"
cargo build --release -q -p waypost-control -p waypost-loadgen
. tools/lib.sh
bench_setup
DURATION=${DURATION:-8}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-16}
backend_port=$(free_port)
taskset -c 1 target/release/waypost-load backend --listen "127.0.0.1:$backend_port" >/dev/null & pids+=($!)
bench_control_plane
curl -sf -X POST "http://$cp/register" -H 'content-type: application/json' -d "{\"service\": \"backend\", \"address\": \"127.0.0.1:$backend_port\", \"ttl_seconds\": 3600}" >/dev/null
declare -A port pidof
for label in A B; do
  bin=${!label}
  port[$label]=$(free_port); port[${label}T]=$(free_port)
  taskset -c 1 $bin --control "http://$cp" --http-listen "127.0.0.1:${port[$label]}" \
    --tcp "127.0.0.1:${port[${label}T]}=backend" --dns-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$work/sc$label" --log-format json 2>"$work/sc$label.log" &
  pidof[$label]=$!; pidof[${label}T]=$!; pids+=($!)
done
hp=$(free_port); port[HT]=$(free_port)
{ haproxy_http_cfg "$hp" "$backend_port"; printf 'listen tcp\n  mode tcp\n  bind 127.0.0.1:%s\n  server b1 127.0.0.1:%s\n' "${port[HT]}" "$backend_port"; } >"$work/haproxy.cfg"
taskset -c 1 haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" & pidof[H]=$!; pidof[HT]=$!; pids+=($!); port[H]=$hp
for l in A B H AT HT; do wait_port ${port[$l]}; done
for l in A B; do wait_routed "${port[$l]}"; done
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
uticks() { awk '{print $14}' /proc/$1/stat; }
csw() { cat /proc/$1/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'; }
hz=$(getconf CLK_TCK)
printf "%-5s %-3s %9s %8s %8s %8s\n" round p req/s p50 p99 us/req
for r in $(seq $ROUNDS); do
  for l in ${ORDER:-A B H}; do
    t0=$(ticks ${pidof[$l]}); u0=$(uticks ${pidof[$l]}); c0=$(csw ${pidof[$l]})
    out=$(taskset -c 0 wrk -t1 -c$CONNS -d${DURATION}s --latency -H 'Host: backend' "http://127.0.0.1:${port[$l]}/")
    t1=$(ticks ${pidof[$l]}); u1=$(uticks ${pidof[$l]}); c1=$(csw ${pidof[$l]})
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    us=$(awk -v t=$((t1-t0)) -v u=$((u1-u0)) -v hz=$hz -v n=$reqs -v c=$((c1-c0)) 'BEGIN{printf "%.2f user %.2f csw %.3f", t/hz*1e6/n, u/hz*1e6/n, c/n}')
    printf "%-5s %-3s %9s %8s %8s %s\n" $r $l $rps $p50 $p99 "$us"
  done
done
