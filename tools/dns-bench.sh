#!/usr/bin/env bash
# The DNS benchmark of BENCHMARKS.md: the sidecar against stock dnsmasq serving the same names
# (SERVICES services x 2 instances), both queried by dnsperf in the same run, A and SRV; then the
# propagation time from a register's acknowledgement until the sidecar answers it.
#
# Usage: tools/dns-bench.sh   (SERVICES, DURATION seconds, ROUNDS, CLIENTS, TRIALS override)
# Needs dnsperf and dnsmasq (Debian packages dnsperf, dnsmasq-base) and dig (dnsutils).
# Servers run on CPU 1 and dnsperf on CPU 0 (taskset), so each DNS server gets one core; every
# server listens on 127.0.0.1 and every run is bounded by DURATION.
set -euo pipefail

SERVICES=${SERVICES:-1000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-4}
TRIALS=${TRIALS:-300}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for tool in dnsperf dnsmasq dig taskset; do
  command -v "$tool" >/dev/null || { echo "dns-bench: $tool is missing (apt-get install dnsperf dnsmasq-base dnsutils)" >&2; exit 1; }
done
cargo build --release -q -p waypost-control -p waypost-sidecar -p waypost-loadgen
load=target/release/waypost-load

. tools/lib.sh
bench_setup

# Control plane (in memory: the DNS path is what is measured).
bench_control_plane
"$load" dns-seed --target "http://$cp" --services "$SERVICES" --out "$work"

# The sidecar.
sidecar_port=$(free_port)
taskset -c 1 target/release/waypost-sidecar --control "http://$cp" --dns-listen "127.0.0.1:$sidecar_port" \
  --admin-listen 127.0.0.1:0 --data-dir "$work/sidecar" --log-format json 2>"$work/sidecar.log" &
pids+=($!)
want=$((SERVICES * 2))
for _ in $(seq 300); do
  n=$(dig @127.0.0.1 -p "$sidecar_port" "svc-$(printf %05d $((SERVICES - 1))).service.waypost" A +short 2>/dev/null | wc -l || true)
  [ "$n" = 2 ] && break
  sleep 0.1
done
[ "$n" = 2 ] || { echo "sidecar never answered the last name" >&2; cat "$work/sidecar.log" >&2; exit 1; }

# dnsmasq: the same names from a hosts file and srv-host lines, authoritative TTL 5 s like ours.
dnsmasq_port=$(free_port)
taskset -c 1 dnsmasq --keep-in-foreground --no-resolv --no-hosts --user=root \
  --listen-address=127.0.0.1 --bind-interfaces --port="$dnsmasq_port" \
  --addn-hosts="$work/hosts" --conf-file="$work/dnsmasq.conf" --local-ttl=5 \
  --cache-size=10000 --pid-file= 2>"$work/dnsmasq.log" &
pids+=($!)
for _ in $(seq 100); do
  n=$(dig @127.0.0.1 -p "$dnsmasq_port" svc-00000.service.waypost A +short 2>/dev/null | wc -l || true)
  [ "$n" = 2 ] && break
  sleep 0.1
done
[ "$n" = 2 ] || { echo "dnsmasq never answered" >&2; cat "$work/dnsmasq.log" >&2; exit 1; }

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -h | awk '/Mem:/ {print $2}') RAM"
echo "Names: $SERVICES services x 2 instances; dnsperf -c $CLIENTS -q 100 -l $DURATION, $ROUNDS rounds; servers on CPU 1, dnsperf on CPU 0"
echo
echo "| round | server | query | queries/s | avg latency ms | max latency ms | lost | rcodes |"
echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"
for round in $(seq "$ROUNDS"); do
  for qtype in a srv; do
    for server in sidecar dnsmasq; do
      port=$sidecar_port; [ "$server" = dnsmasq ] && port=$dnsmasq_port
      out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries-$qtype.txt" \
        -c "$CLIENTS" -q 100 -l "$DURATION" 2>&1)
      qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
      avg=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' <<<"$out")
      max=$(awk '/Average Latency/ {gsub(/[()]/, ""); printf "%.3f", $8 * 1000}' <<<"$out")
      lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
      codes=$(awk -F: '/Response codes/ {gsub(/^ +/, "", $2); print $2}' <<<"$out")
      echo "| $round | $server | ${qtype^^} | $qps | $avg | $max | $lost | $codes |"
    done
  done
done

echo
echo "Propagation (register acknowledged -> the sidecar answers the new name), $TRIALS trials:"
echo
"$load" propagation --target "http://$cp" --dns "127.0.0.1:$sidecar_port" --trials "$TRIALS"
