#!/usr/bin/env bash
# What a gigabyte costs in CPU on each TCP path of the proxy benchmark (BENCHMARKS.md, "TCP: why
# 90% of direct is out of reach"): iperf3 direct, through haproxy in tcp mode and through the
# sidecar's TCP route, with the busy time of the whole machine (both cores, /proc/stat) over
# each run, as cores busy and CPU-seconds per GB.
#
# Usage: tools/proxy-tcp-cpu.sh   (ROUNDS, DURATION seconds, SC=sidecar binary, PCPU override)
# Needs iperf3 and haproxy. iperf3's server and the proxies on CPU 1 (PCPU), its client on
# CPU 0; loopback only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p waypost-control -p waypost-sidecar
. tools/lib.sh
bench_setup
SC=${SC:-target/release/waypost-sidecar}
iperf_port=$(free_port)
taskset -c 1 iperf3 -s -p "$iperf_port" >/dev/null 2>&1 & pids+=($!)
bench_control_plane
curl -sf -X POST "http://$cp/register" -H 'content-type: application/json' -d "{\"service\": \"iperf\", \"address\": \"127.0.0.1:$iperf_port\", \"ttl_seconds\": 3600}" >/dev/null
st=$(free_port)
taskset -c ${PCPU:-1} $SC --control "http://$cp" --http-listen 127.0.0.1:0 --tcp "127.0.0.1:$st=iperf" --dns-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$work/sc" --log-format json 2>"$work/sc.log" & pids+=($!)
ht=$(free_port)
cat >"$work/haproxy.cfg" <<EOC
global
  nbthread 1
defaults
  timeout connect 1s
  timeout client 30s
  timeout server 30s
listen iperf
  mode tcp
  bind 127.0.0.1:$ht
  server i1 127.0.0.1:$iperf_port
EOC
taskset -c ${PCPU:-1} haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" & pids+=($!)
wait_port $iperf_port; wait_port $ht; wait_port $st
# The sidecar takes its first snapshot from the control plane; an iperf3 run before it has the
# route fails (and stops the script) rather than measuring anything else.
sleep 1
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
hz=$(getconf CLK_TCK)
printf "%-6s %-8s %8s %10s %12s\n" round path Gbit/s cores-busy cpu-s/GB
for r in $(seq ${ROUNDS:-3}); do
  for t in "direct $iperf_port" "haproxy $ht" "sidecar $st"; do
    set -- $t
    read b0 a0 < <(busy)
    js=$(taskset -c 0 iperf3 -c 127.0.0.1 -p $2 -t ${DURATION:-8} -J)
    read b1 a1 < <(busy)
    bps=$(echo "$js" | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    secs=$(echo "$js" | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["seconds"])')
    awk -v bps=$bps -v s=$secs -v db=$((b1-b0)) -v da=$((a1-a0)) -v hz=$hz -v r=$r -v p=$1 'BEGIN{gb=bps*s/8/1e9; printf "%-6s %-8s %8.2f %10.2f %12.3f\n", r, p, bps/1e9, 2*db/da, db/hz/gb}'
  done
done
