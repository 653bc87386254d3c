#!/usr/bin/env bash
# A tour of the control plane's API with curl only. Start the control plane first:
#     cargo run -p waypost-control -- --in-memory
# then run:  bash examples/walkthrough.sh [http://127.0.0.1:9000]
# Every step prints the request and the answer; the script stops at the first failed request.
set -euo pipefail
W=${1:-${WAYPOST_URL:-http://127.0.0.1:9000}}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
call() { printf '$ curl %s\n' "$*"; curl -sS --fail-with-body "$@"; echo; }
json=(-H 'content-type: application/json')

step "Register (seed form): service + address"
call -X POST "$W/register" "${json[@]}" -d '{"service": "user-service", "address": "http://localhost:8001"}'

step "Register (rich form): id, host + port, tags, metadata, weight, TTL, health check"
call -X POST "$W/register" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "host": "127.0.0.1", "port": 8002,
  "tags": ["v2"], "metadata": {"zone": "a"}, "weight": 5, "ttl_seconds": 60,
  "check": {"http": "http://127.0.0.1:8002/healthz", "interval_seconds": 10, "timeout_seconds": 2}}'

step "Heartbeat (seed form, then by id, then a batch)"
call -X POST "$W/heartbeat" "${json[@]}" -d '{"service": "user-service", "address": "http://localhost:8001"}'
call -X POST "$W/heartbeat" "${json[@]}" -d '{"service": "user-service", "id": "user-2"}'
call -X POST "$W/heartbeat" "${json[@]}" -d '{"instances": [{"service": "user-service", "id": "user-2"}, {"service": "user-service", "id": "localhost:8001"}]}'

step "Discover: all healthy instances, then filtered by tag and by metadata"
call "$W/discover/user-service"
call "$W/discover/user-service?tag=v2"
call "$W/discover/user-service?meta.zone=a"

step "List services"
call "$W/services"

step "Drain an instance: it leaves default discovery but stays registered"
call -X POST "$W/drain" "${json[@]}" -d '{"service": "user-service", "id": "user-2"}'
call "$W/discover/user-service"
call "$W/discover/user-service?healthy=false"
call -X POST "$W/drain" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "draining": false}'

step "Report a health check (what a sidecar does): critical takes the instance out, passing brings it back"
call -X POST "$W/check" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "health": "critical", "output": "GET /healthz: 503"}'
call "$W/discover/user-service"
call -X POST "$W/check" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "health": "passing"}'

step "Blocking query: returns when user-service changes after INDEX, or after 2 s"
INDEX=$(curl -sS -o /dev/null -D - "$W/discover/user-service" | tr -d '\r' | awk 'tolower($1)=="x-waypost-index:" {print $2}')
echo "X-Waypost-Index: $INDEX"
call "$W/discover/user-service?index=$INDEX&wait=2s"

step "Watch the change stream for 2 s (snapshot, then changes; ids are <epoch>-<revision>)"
( sleep 0.5; curl -sS -o /dev/null -X POST "$W/register" "${json[@]}" -d '{"service": "cart", "address": "127.0.0.1:9100"}' ) &
printf '$ curl -N %s\n' "$W/watch"
curl -sS -N --max-time 2 "$W/watch" || true
wait
echo

step "Deregister (seed form and by id)"
call -X POST "$W/deregister" "${json[@]}" -d '{"service": "user-service", "address": "http://localhost:8001"}'
call -X POST "$W/deregister" "${json[@]}" -d '{"service": "user-service", "id": "user-2"}'
call -X POST "$W/deregister" "${json[@]}" -d '{"service": "cart", "address": "127.0.0.1:9100"}'

step "An error is RFC 9457 problem+json with a stable code"
printf '$ curl %s\n' "-X POST $W/heartbeat -d '{\"service\": \"user-service\", \"id\": \"gone\"}'"
curl -sS -X POST "$W/heartbeat" "${json[@]}" -d '{"service": "user-service", "id": "gone"}'; echo

step "Operations"
call "$W/health"
call "$W/ready"
printf '$ curl %s/metrics | grep ^waypost_ | head\n' "$W"
curl -sS "$W/metrics" | grep '^waypost_' | awk 'NR <= 10'
echo
echo "The OpenAPI document is at $W/openapi.json and the docs UI at $W/docs"
