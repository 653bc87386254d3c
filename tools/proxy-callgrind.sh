#!/usr/bin/env bash
# Instructions per proxied request under callgrind (BENCHMARKS.md): the sidecar binary $A, or
# haproxy with HAP=1, behind the same wrk load (16 connections, a 3 s warm-up, then D seconds
# counted, 10 by default), every thread of the process, divided by the requests wrk completed.
# Repeatable for the same binary, whatever else the machine does; blind to the kernel.
#
# Usage: A=target/release/waypost-sidecar tools/proxy-callgrind.sh   (OUT names the output file)
# Needs valgrind and wrk.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ "${HAP:-0}" = 1 ] || : "${A:?set A to a waypost-sidecar binary, or HAP=1}"
cargo build --release -q -p waypost-control -p waypost-loadgen
. tools/lib.sh
bench_setup
export WAIT_TRIES=300  # valgrind starts slowly
backend_port=$(free_port)
taskset -c 1 target/release/waypost-load backend --listen "127.0.0.1:$backend_port" >/dev/null & pids+=($!)
bench_control_plane
curl -sf -X POST "http://$cp/register" -H 'content-type: application/json' -d "{\"service\": \"backend\", \"address\": \"127.0.0.1:$backend_port\", \"ttl_seconds\": 3600}" >/dev/null
sp=$(free_port)
OUT=${OUT:-$work/callgrind.out}
if [ "${HAP:-0}" = 1 ]; then
haproxy_http_cfg "$sp" "$backend_port" >"$work/haproxy.cfg"
taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT haproxy -db -f "$work/haproxy.cfg" 2>"$work/vg.log" & vpid=$!; pids+=($!)
else
taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT $A --control "http://$cp" --http-listen "127.0.0.1:$sp" --dns-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$work/sc" --log-format json 2>"$work/vg.log" & vpid=$!; pids+=($!)
fi
wait_port $sp
wait_routed "$sp"
taskset -c 0 wrk -t1 -c16 -d3s -H 'Host: backend' "http://127.0.0.1:$sp/" >/dev/null
callgrind_control -i on $vpid >/dev/null
out=$(taskset -c 0 wrk -t1 -c16 -d${D:-10}s -H 'Host: backend' "http://127.0.0.1:$sp/")
callgrind_control -i off $vpid >/dev/null
n=$(echo "$out" | awk '/requests in/ {print $1}')
callgrind_control -d $vpid >/dev/null
sleep 1
f=$(ls -t $OUT* | head -1)
total=$(callgrind_annotate $f 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "requests $n, instructions $total, per request $((total / n))"
echo "file $f"
