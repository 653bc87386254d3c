#!/usr/bin/env bash
# The proxy benchmark of BENCHMARKS.md, all in one run: HTTP req/s and latency with wrk straight
# to a backend, through nginx (keep-alive reverse proxy), through haproxy (http mode) and
# through the sidecar; then TCP bulk throughput with iperf3 direct, through haproxy (tcp mode)
# and through the sidecar's TCP route.
#
# Usage: tools/proxy-bench.sh   (DURATION seconds, CONNS, ROUNDS override)
# Needs wrk, nginx, haproxy, iperf3 (Debian packages wrk nginx-light haproxy iperf3).
# The backend and the proxy under test run on CPU 1, the load generator on CPU 0 (taskset).
# Everything listens on 127.0.0.1; every run is bounded by DURATION.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for tool in wrk nginx haproxy iperf3 taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "proxy-bench: $tool is missing" >&2; exit 1; }
done
cargo build --release -q -p waypost-control -p waypost-sidecar -p waypost-loadgen

. tools/lib.sh
bench_setup

backend_port=$(free_port)
taskset -c 1 target/release/waypost-load backend --listen "127.0.0.1:$backend_port" >/dev/null &
pids+=($!)
iperf_port=$(free_port)
taskset -c 1 iperf3 -s -p "$iperf_port" >/dev/null 2>&1 &
pids+=($!)

# Control plane and sidecar; the backend and the iperf3 server are registered services.
bench_control_plane
for svc in "backend 127.0.0.1:$backend_port" "iperf 127.0.0.1:$iperf_port"; do
  set -- $svc
  curl -sf -X POST "http://$cp/register" -H 'content-type: application/json' \
    -d "{\"service\": \"$1\", \"address\": \"$2\", \"ttl_seconds\": 3600}" >/dev/null
done
sidecar_http=$(free_port)
sidecar_tcp=$(free_port)
taskset -c 1 target/release/waypost-sidecar --control "http://$cp" --http-listen "127.0.0.1:$sidecar_http" \
  --tcp "127.0.0.1:$sidecar_tcp=iperf" --dns-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --data-dir "$work/sidecar" --log-format json 2>"$work/sidecar.log" &
pids+=($!)

# nginx: one worker, keep-alive to the backend.
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$backend_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
taskset -c 1 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/stderr" &
pids+=($!)

# haproxy: one thread, http mode with connection reuse; and a tcp-mode listener for iperf3.
# nginx and haproxy add X-Forwarded-For, as the sidecar does.
haproxy_port=$(free_port)
haproxy_tcp=$(free_port)
{
  haproxy_http_cfg "$haproxy_port" "$backend_port"
  cat <<EOF
listen iperf
  mode tcp
  bind 127.0.0.1:$haproxy_tcp
  server i1 127.0.0.1:$iperf_port
EOF
} >"$work/haproxy.cfg"
taskset -c 1 haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
pids+=($!)

for port in "$backend_port" "$sidecar_http" "$nginx_port" "$haproxy_port" "$iperf_port"; do wait_port "$port"; done
wait_routed "$sidecar_http" || { cat "$work/sidecar.log" >&2; exit 1; }

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -h | awk '/Mem:/ {print $2}') RAM"
echo "wrk -t1 -c$CONNS -d${DURATION}s on CPU 0; backend and proxy on CPU 1; $ROUNDS rounds; $(nginx -v 2>&1 | cut -d/ -f2), haproxy $(haproxy -v | head -1 | awk '{print $3}')"
echo
echo "| round | path | req/s | p50 ms | p99 ms | errors |"
echo "| ---: | --- | ---: | ---: | ---: | --- |"
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v } else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 } else print v }'; }
for round in $(seq "$ROUNDS"); do
  for path in direct nginx haproxy sidecar; do
    case $path in
      direct) port=$backend_port ;; nginx) port=$nginx_port ;;
      haproxy) port=$haproxy_port ;; sidecar) port=$sidecar_http ;;
    esac
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H 'Host: backend' "http://127.0.0.1:$port/")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd ';' - || true)
    echo "| $round | $path | $rps | $p50 | $p99 | ${errs:-none} |"
  done
done

echo
echo "| round | TCP path | Gbit/s |"
echo "| ---: | --- | ---: |"
for round in $(seq "$ROUNDS"); do
  for path in direct haproxy sidecar; do
    case $path in
      direct) port=$iperf_port ;; haproxy) port=$haproxy_tcp ;; sidecar) port=$sidecar_tcp ;;
    esac
    bps=$(taskset -c 0 iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    echo "| $round | $path | $(awk -v b="$bps" 'BEGIN { printf "%.2f", b / 1e9 }') |"
  done
done
