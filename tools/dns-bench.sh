#!/usr/bin/env bash
# The DNS benchmark of BENCHMARKS.md: the sidecar against knot, unbound and dnsmasq serving the
# same names (SERVICES services x 2 instances), all queried by dnsperf in the same run, A and SRV,
# the servers taking turns within each round; then the latency at a fixed rate (RATE queries/s)
# of the sidecar and knot; then the propagation time from a register's acknowledgement until the
# sidecar answers it.
#
# Usage: tools/dns-bench.sh
#   SERVICES, DURATION (seconds per run), ROUNDS, CLIENTS, RATE, RATE_DURATION, RATE_ROUNDS and
#   TRIALS override the defaults below; PEERS picks the other servers (default
#   "knot unbound dnsmasq"), KNOT_WORKERS knot's UDP workers (default: its own, one per CPU
#   online); BASE=path/to/another/waypost-sidecar adds that build as server
#   "base", following the same control plane, for a before/after in the same run.
# Needs dnsperf, knot, unbound, dnsmasq (Debian packages dnsperf, knot, unbound, dnsmasq-base)
# and dig (dnsutils); no system service of theirs is used: each server runs here, on 127.0.0.1,
# with a configuration written into the work directory. Servers run on CPU 1 and dnsperf on CPU 0
# (taskset), so each DNS server gets one core; every run is bounded by its duration.
set -euo pipefail

SERVICES=${SERVICES:-1000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-4}
RATE=${RATE:-10000}
RATE_DURATION=${RATE_DURATION:-10}
RATE_ROUNDS=${RATE_ROUNDS:-2}
TRIALS=${TRIALS:-300}
PEERS=${PEERS:-knot unbound dnsmasq}
BASE=${BASE:-}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
need() { command -v "$1" >/dev/null || { echo "dns-bench: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need dnsperf dnsperf; need dig dnsutils; need taskset util-linux
for peer in $PEERS; do
  case $peer in
    knot) need knotd knot ;;
    unbound) need unbound unbound ;;
    dnsmasq) need dnsmasq dnsmasq-base ;;
    *) echo "dns-bench: unknown peer $peer" >&2; exit 1 ;;
  esac
done
cargo build --release -q -p waypost-control -p waypost-sidecar -p waypost-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
load=$bin/waypost-load

. tools/lib.sh
bench_setup

# Control plane (in memory: the DNS path is what is measured).
bench_control_plane
"$load" dns-seed --target "http://$cp" --services "$SERVICES" --out "$work" >/dev/null
last=svc-$(printf %05d $((SERVICES - 1))).service.waypost

# `wait_answers PORT NAME`: the server on PORT answers the last service's two addresses.
wait_answers() {
  local n=""
  for _ in $(seq 300); do
    n=$(dig @127.0.0.1 -p "$1" "$last" A +short +tries=1 +time=1 2>/dev/null | wc -l || true)
    [ "$n" = 2 ] && return 0
    sleep 0.1
  done
  echo "$2 never answered $last" >&2
  cat "$work/$2.log" >&2
  exit 1
}

servers=()
declare -A port pid

# `start NAME COMMAND...`: runs a server on CPU 1 (its stderr in NAME.log) on port[NAME].
# Every thread is pinned again once it answers: knot sets its UDP workers' affinity itself,
# one per CPU online, which put one of them on dnsperf's CPU 0 despite taskset.
start() {
  local name=$1 thread
  shift
  taskset -c 1 "$@" 2>"$work/$name.log" &
  pids+=($!)
  pid[$name]=$!
  servers+=("$name")
  wait_answers "${port[$name]}" "$name"
  taskset -a -p -c 1 "${pid[$name]}" >/dev/null
  for thread in /proc/"${pid[$name]}"/task/*; do
    grep -q '^Cpus_allowed_list:[[:space:]]*1$' "$thread/status" ||
      { echo "dns-bench: a thread of $name is not on CPU 1" >&2; exit 1; }
  done
}

sidecar() {
  port[$1]=$(free_port)
  start "$1" "$2" --control "http://$cp" --dns-listen "127.0.0.1:${port[$1]}" \
    --admin-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$work/$1" --log-format json
}
sidecar sidecar "$bin/waypost-sidecar"
[ -n "$BASE" ] && sidecar base "$BASE"

for peer in $PEERS; do
  port[$peer]=$(free_port)
  case $peer in
    knot)
      # Stock settings (as many UDP workers as CPUs online, KNOT_WORKERS to change it), the
      # zone from the file, nothing written back.
      mkdir -p "$work/knot"
      cat >"$work/knot.conf" <<EOF
server:
    rundir: "$work/knot"
    listen: 127.0.0.1@${port[knot]}${KNOT_WORKERS:+
    udp-workers: $KNOT_WORKERS}
database:
    storage: "$work/knot"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$work/knot"
    journal-content: none
    zonefile-sync: -1
zone:
  - domain: waypost.
    file: "$work/waypost.zone"
EOF
      start knot knotd -c "$work/knot.conf"
      ;;
    unbound)
      # The zone as local data (a static local zone): unbound's usual way to serve names of
      # its own, and faster here than the same zone as an auth-zone. One thread (the default).
      {
        cat <<EOF
server:
    interface: 127.0.0.1@${port[unbound]}
    port: ${port[unbound]}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: ""
    use-syslog: no
    verbosity: 0
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "waypost." static
EOF
        awk '/^\$|IN SOA|IN NS/ {next}
             { owner = ($1 ~ /\.$/) ? $1 : $1 ".waypost."; data = ""
               for (i = 2; i <= NF; i++) data = data " " $i
               sub(/\.addr$/, ".addr.waypost.", data)
               printf "    local-data: \"%s 5%s\"\n", owner, data }' "$work/waypost.zone"
        printf 'remote-control:\n    control-enable: no\n'
      } >"$work/unbound.conf"
      start unbound unbound -d -c "$work/unbound.conf"
      ;;
    dnsmasq)
      # The same names from a hosts file and srv-host lines, authoritative TTL 5 s like ours.
      start dnsmasq dnsmasq --keep-in-foreground --no-resolv --no-hosts --user=root \
        --listen-address=127.0.0.1 --bind-interfaces --port="${port[dnsmasq]}" \
        --addn-hosts="$work/hosts" --conf-file="$work/dnsmasq.conf" --local-ttl=5 \
        --cache-size=10000 --pid-file=
      ;;
  esac
done

# `cpu NAME`: CPU time the server has used so far, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }
ticks=$(getconf CLK_TCK)

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -h | awk '/Mem:/ {print $2}') RAM, $(uname -r)"
echo "Versions: $(dnsperf -h 2>&1 | awk '/^Version/ {print "dnsperf " $2}'); $(knotd --version 2>/dev/null | head -1 || true); $(unbound -V 2>/dev/null | head -1 || true); $(dnsmasq --version 2>/dev/null | head -1 || true)"
echo "Names: $SERVICES services x 2 instances; dnsperf -c $CLIENTS -q 100 -l $DURATION, $ROUNDS rounds; servers on CPU 1, dnsperf on CPU 0"
echo
echo "| round | server | query | queries/s | mean latency ms | max latency ms | server CPU µs/query | answer bytes | lost | rcodes |"
echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for round in $(seq "$ROUNDS"); do
  for qtype in a srv; do
    for server in "${servers[@]}"; do
      before=$(cpu "$server")
      out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "${port[$server]}" -d "$work/queries-$qtype.txt" \
        -c "$CLIENTS" -q 100 -l "$DURATION" 2>&1)
      used=$(($(cpu "$server") - before))
      qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
      avg=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' <<<"$out")
      max=$(awk '/Average Latency/ {gsub(/[()]/, ""); printf "%.3f", $8 * 1000}' <<<"$out")
      done_=$(awk '/Queries completed/ {print $3}' <<<"$out")
      per=$(awk -v t="$used" -v hz="$ticks" -v n="$done_" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
      bytes=$(awk '/Average packet size/ {print $NF}' <<<"$out")
      lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
      codes=$(awk -F: '/Response codes/ {gsub(/^ +/, "", $2); print $2}' <<<"$out")
      echo "| $round | $server | ${qtype^^} | ${qps%.*} | $avg | $max | $per | $bytes | $lost | $codes |"
    done
  done
done

# Latency at a fixed rate: every answer's latency from dnsperf -v, sorted, read at the ranks.
echo
echo "Latency at $RATE queries/s (dnsperf -Q $RATE -c $CLIENTS -l $RATE_DURATION), $RATE_ROUNDS rounds:"
echo
echo "| round | server | query | answered | p50 ms | p99 ms | p99.9 ms | max ms | server CPU µs/query | lost |"
echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for round in $(seq "$RATE_ROUNDS"); do
  for qtype in a srv; do
    for server in "${servers[@]}"; do
      case $server in sidecar | base | knot) ;; *) continue ;; esac
      before=$(cpu "$server")
      taskset -c 0 dnsperf -s 127.0.0.1 -p "${port[$server]}" -d "$work/queries-$qtype.txt" \
        -c "$CLIENTS" -Q "$RATE" -l "$RATE_DURATION" -v >"$work/rate.out" 2>&1
      used=$(($(cpu "$server") - before))
      lost=$(awk '/Queries lost/ {print $3}' "$work/rate.out")
      awk '/^> / {print $NF * 1000}' "$work/rate.out" | sort -g >"$work/rate.sorted"
      awk -v round="$round" -v server="$server" -v q="${qtype^^}" -v lost="$lost" \
        -v used="$used" -v hz="$ticks" '
        { v[NR] = $1 }
        function at(p) { i = int(NR * p + 0.999999); if (i < 1) i = 1; return v[i] }
        END { printf "| %s | %s | %s | %d | %.3f | %.3f | %.3f | %.3f | %.2f | %s |\n",
                     round, server, q, NR, at(0.5), at(0.99), at(0.999), v[NR],
                     used / hz * 1e6 / NR, lost }' \
        "$work/rate.sorted"
    done
  done
done

echo
echo "Propagation (register acknowledged -> the sidecar answers the new name), $TRIALS trials:"
echo
"$load" propagation --target "http://$cp" --dns "127.0.0.1:${port[sidecar]}" --trials "$TRIALS"
