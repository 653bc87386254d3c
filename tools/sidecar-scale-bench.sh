#!/usr/bin/env bash
# Issue 18's sidecar at 100,000 instances (BENCHMARKS.md): two sidecar binaries (OLD and NEW, say
# main and a branch) take turns against the same control plane, first with SIZES' small count
# of services and then the large one (10 instances each: 100 and 10,000 services by default,
# 1,000 and 100,000 instances). For each: the time from the sidecar's start until it has applied
# the control plane's revision, its resident memory (VmRSS), the time from a register's
# acknowledgement until the sidecar answers the new instance over DNS for TRIALS single changes
# (one at a time, each into an existing service; and the sidecar's own apply time from its
# `waypost_sidecar_apply_seconds` histogram where it has one), then dnsperf's A rate over every
# service and wrk's rate through the HTTP proxy to a bare backend.
#
# Usage: OLD=path/to/old/waypost-sidecar tools/sidecar-scale-bench.sh
#        (NEW, CONTROL, LOAD: binaries, target/release by default; SIZES, PER, ROUNDS,
#        DURATION seconds, TRIALS, CLIENTS, CONNS override)
# Needs dnsperf (Debian dnsperf), wrk, curl, taskset. The servers (control plane, backend,
# sidecar) run on CPU 1 and the load (dnsperf, wrk, waypost-load) on CPU 0. Loopback only; every
# step is bounded in time (DURATION, the tools' own limits, `timeout`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${OLD:?set OLD to the waypost-sidecar binary to compare with}"
NEW=${NEW:-target/release/waypost-sidecar}
CONTROL=${CONTROL:-target/release/waypost-control}
LOAD=${LOAD:-target/release/waypost-load}
read -r -a SIZES <<<"${SIZES:-100 10000}"
PER=${PER:-10}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
TRIALS=${TRIALS:-200}
CLIENTS=${CLIENTS:-4}
CONNS=${CONNS:-16}
for tool in dnsperf wrk curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "sidecar-scale-bench: $tool is missing" >&2; exit 1; }
done
for bin in "$OLD" "$NEW" "$CONTROL" "$LOAD"; do
  [ -x "$bin" ] || { echo "sidecar-scale-bench: $bin is not an executable" >&2; exit 1; }
done
. tools/lib.sh
bench_setup

backend_port=$(free_port)
taskset -c 1 "$LOAD" backend --listen "127.0.0.1:$backend_port" >/dev/null &
pids+=($!)
wait_port "$backend_port"

# The control plane's revision (any read answers it in X-Waypost-Index).
cp_revision() {
  curl -sfI "http://$cp/services" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-waypost-index" {print $2}'
}
sidecar_revision() {
  curl -sf "http://127.0.0.1:$1/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])' 2>/dev/null || echo 0
}
rss_mib() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v } else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 } else print v }'; }

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -h | awk '/Mem:/ {print $2}') RAM"
echo "OLD: $OLD; NEW: $NEW; control plane: $CONTROL (in memory)"
echo "Sizes: ${SIZES[*]} services x $PER instances; $ROUNDS rounds; $TRIALS single changes; dnsperf -c $CLIENTS -q 100 -l $DURATION; wrk -t1 -c$CONNS -d${DURATION}s; servers on CPU 1, load on CPU 0"
echo
header="| instances | build | round | start to applied s | RSS MiB | change to DNS p50 ms | p99 ms | sidecar apply mean ms | p50 at most ms | p99 at most ms | DNS A q/s | proxy req/s | proxy p99 ms |"
rows=()
run=0
for services in "${SIZES[@]}"; do
  [ -n "${cp_pid:-}" ] && kill "$cp_pid" 2>/dev/null && wait "$cp_pid" 2>/dev/null || true
  taskset -c 1 "$CONTROL" --in-memory --listen 127.0.0.1:0 --write-rate 0 --log-format json \
    2>"$work/control.log" &
  cp_pid=$!
  pids+=($cp_pid)
  cp=$(logged_addr "$work/control.log")
  curl -sf -X POST "http://$cp/register" -H 'content-type: application/json' \
    -d "{\"service\": \"backend\", \"address\": \"127.0.0.1:$backend_port\", \"ttl_seconds\": 86400}" >/dev/null
  taskset -c 0 timeout 600 "$LOAD" dns-seed --target "http://$cp" --services "$services" \
    --per-service "$PER" --concurrency 16 --out "$work/names-$services" >&2
  instances=$((services * PER))
  for round in $(seq "$ROUNDS"); do
    for label in OLD NEW; do
      bin=${!label}
      dns=$(free_port) admin=$(free_port) http=$(free_port)
      rm -rf "$work/sidecar"
      started=$(now_ms)
      taskset -c 1 "$bin" --control "http://$cp" --dns-listen "127.0.0.1:$dns" \
        --admin-listen "127.0.0.1:$admin" --http-listen "127.0.0.1:$http" \
        --data-dir "$work/sidecar" --log-format json 2>"$work/sidecar.log" &
      sc=$!
      pids+=($sc)
      want=$(cp_revision)
      applied=""
      for _ in $(seq 1200); do
        [ "$(sidecar_revision "$admin")" -ge "$want" ] && { applied=$(now_ms); break; }
        sleep 0.05
      done
      [ -n "$applied" ] || { echo "the $label sidecar never reached revision $want" >&2; cat "$work/sidecar.log" >&2; exit 1; }
      start_s=$(awk -v a="$applied" -v b="$started" 'BEGIN { printf "%.2f", (a - b) / 1000 }')
      # Let the first save to disk and its allocations settle before reading the memory.
      sleep 2
      rss=$(rss_mib "$sc")
      out=$(taskset -c 0 timeout 300 "$LOAD" propagation --target "http://$cp" --dns "127.0.0.1:$dns" \
        --trials "$TRIALS" --into-services "$services" --run "$run" --sidecar-admin "127.0.0.1:$admin")
      run=$((run + 1))
      echo "$label, $instances instances, round $round:" >&2
      echo "$out" >&2
      prop=$(grep -A2 '| trials |' <<<"$out" | tail -1)
      p50=$(awk -F'|' '{gsub(/ /, "", $5); print $5}' <<<"$prop")
      p99=$(awk -F'|' '{gsub(/ /, "", $6); print $6}' <<<"$prop")
      apply=$(grep -A2 '| sidecar applies |' <<<"$out" | tail -1 || true)
      if [ -n "$apply" ]; then
        read -r amean ap50 ap99 < <(awk -F'|' '{gsub(/ /, ""); print $3, $4, $5}' <<<"$apply")
      else
        amean=n/a ap50=n/a ap99=n/a
      fi
      dnsout=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$dns" -d "$work/names-$services/queries-a.txt" \
        -c "$CLIENTS" -q 100 -l "$DURATION" 2>&1)
      qps=$(awk '/Queries per second/ {printf "%.0f", $4}' <<<"$dnsout")
      lost=$(awk '/Queries lost/ {print $3}' <<<"$dnsout")
      [ "$lost" = 0 ] || echo "dnsperf lost $lost queries ($label, $instances instances)" >&2
      wrkout=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H 'Host: backend' "http://127.0.0.1:$http/")
      rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$wrkout")
      wp99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$wrkout")")
      if grep -qE 'Non-2xx|Socket errors' <<<"$wrkout"; then
        echo "wrk errors ($label, $instances instances): $(grep -E 'Non-2xx|Socket errors' <<<"$wrkout")" >&2
      fi
      row="| $instances | $label | $round | $start_s | $rss | $p50 | $p99 | $amean | $ap50 | $ap99 | $qps | $rps | $wp99 |"
      rows+=("$row")
      echo "$row" >&2
      kill "$sc"
      wait "$sc" 2>/dev/null || true
    done
  done
done
echo "$header"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
