#!/usr/bin/env bash
# A tour of the control plane's API with curl only. Start the control plane first:
#     cargo run --release -p waypost-control -- --in-memory
# then run:  bash examples/walkthrough.sh [http://127.0.0.1:9000]
# Every step prints the command line it runs, exactly (paste it into a shell and it does the
# same), then the answer; the script stops at the first failed request.
set -euo pipefail
W=${1:-${WAYPOST_URL:-http://127.0.0.1:9000}}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Quotes each argument only when the shell needs it, so that the printed line stays readable.
quote() {
  local a sq="'\\''" out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/$sq}'")
    fi
  done
  printf '%s' "${out[*]}"
}
# Prints a command line, then runs that very string: what is shown is what ran.
run_line() { printf '$ %s\n' "$1"; eval "$1"; echo; }
# The same for one command given as arguments.
run() { run_line "$(quote "$@")"; }

# --fail-with-body: a 4xx or 5xx answer stops the tour, after showing its problem document.
curl=(curl -sS --fail-with-body)
json=(-H 'content-type: application/json')

step "Register (seed form): service + address"
run "${curl[@]}" -X POST "$W/register" "${json[@]}" -d '{"service": "user-service", "address": "http://localhost:8001"}'

step "Register (rich form): id, host + port, tags, metadata, weight, TTL, health check"
run "${curl[@]}" -X POST "$W/register" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "host": "127.0.0.1", "port": 8002,
  "tags": ["v2"], "metadata": {"zone": "a"}, "weight": 5, "ttl_seconds": 60,
  "check": {"http": "http://127.0.0.1:8002/healthz", "interval_seconds": 10, "timeout_seconds": 2}}'

step "Heartbeat (seed form, then by id, then a batch)"
run "${curl[@]}" -X POST "$W/heartbeat" "${json[@]}" -d '{"service": "user-service", "address": "http://localhost:8001"}'
run "${curl[@]}" -X POST "$W/heartbeat" "${json[@]}" -d '{"service": "user-service", "id": "user-2"}'
run "${curl[@]}" -X POST "$W/heartbeat" "${json[@]}" -d '{"instances": [{"service": "user-service", "id": "user-2"}, {"service": "user-service", "id": "localhost:8001"}]}'

step "Discover: all healthy instances, then filtered by tag and by metadata"
run "${curl[@]}" "$W/discover/user-service"
run "${curl[@]}" "$W/discover/user-service?tag=v2"
run "${curl[@]}" "$W/discover/user-service?meta.zone=a"

step "List services"
run "${curl[@]}" "$W/services"

step "Drain an instance: it leaves default discovery but stays registered"
run "${curl[@]}" -X POST "$W/drain" "${json[@]}" -d '{"service": "user-service", "id": "user-2"}'
run "${curl[@]}" "$W/discover/user-service"
run "${curl[@]}" "$W/discover/user-service?healthy=false"
run "${curl[@]}" -X POST "$W/drain" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "draining": false}'

step "Report a health check (what a sidecar does): critical takes the instance out, passing brings it back"
run "${curl[@]}" -X POST "$W/check" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "health": "critical", "output": "GET /healthz: 503"}'
run "${curl[@]}" "$W/discover/user-service"
run "${curl[@]}" -X POST "$W/check" "${json[@]}" -d '{"service": "user-service", "id": "user-2", "health": "passing"}'

step "Why is an instance in or out? The same filters as /discover, every instance with its reasons"
run "${curl[@]}" "$W/discover/user-service/explain?tag=v2"

step "Sidecars report themselves (a sidecar does this on its own); writes can wait until they applied them"
run "${curl[@]}" -X PUT "$W/nodes/node-1" "${json[@]}" -d '{"version": "0.1.0", "dns": ["127.0.0.1:8600"], "http": ["127.0.0.1:8081"], "revision": 0}'
run "${curl[@]}" "$W/nodes"
# node-1 reported revision 0 and never more (it is not a real sidecar): the wait times out
# after 1 s, the write is done all the same, and `propagation` names node-1 as behind.
run "${curl[@]}" -X POST "$W/register?wait=propagated&timeout=1s" "${json[@]}" -d '{"service": "user-service", "id": "user-3", "host": "127.0.0.1", "port": 8003}'
run "${curl[@]}" "$W/propagation?revision=1"

step "A protection policy: keep the last set in DNS and proxies when checks or expiry would empty it"
run "${curl[@]}" -X PUT "$W/services/user-service/policy" "${json[@]}" -d '{"never_empty": true, "min_healthy_percent": 30}'
run "${curl[@]}" "$W/services"

step "Blocking query: returns when user-service changes after INDEX, or after 2 s"
line=$(quote "${curl[@]}" -o /dev/null -w '%header{x-waypost-index}' "$W/discover/user-service")
printf '$ %s\n' "$line"
INDEX=$(eval "$line")
printf '%s\n' "$INDEX"
run "${curl[@]}" "$W/discover/user-service?index=$INDEX&wait=2s"

step "Watch the change stream for 2 s (snapshot, then changes; ids are <epoch>-<revision>)"
# A registration half a second into the stream, so that it shows a change after the snapshot.
line="(sleep 0.5; $(quote "${curl[@]}" -o /dev/null -X POST "$W/register" "${json[@]}" -d '{"service": "cart", "address": "127.0.0.1:9100"}')) &"
printf '$ %s\n' "$line"
eval "$line"
registering=$!
# The stream never ends by itself: --max-time ends it, and curl then exits with 28 (time-out),
# which here is the expected way out. -s without -S keeps curl from reporting that as an error;
# any other exit status is a real failure.
line=$(quote curl -s -N --max-time 2 "$W/watch")
printf '$ %s\n' "$line"
status=0
eval "$line" || status=$?
if [ "$status" -ne 28 ]; then
  echo "watch: curl exited with $status, not 28 (the expected time-out)" >&2
  exit 1
fi
wait "$registering"
echo

step "Deregister (seed form and by id)"
run "${curl[@]}" -X POST "$W/deregister" "${json[@]}" -d '{"service": "user-service", "address": "http://localhost:8001"}'
run "${curl[@]}" -X POST "$W/deregister" "${json[@]}" -d '{"service": "user-service", "id": "user-2"}'
run "${curl[@]}" -X POST "$W/deregister" "${json[@]}" -d '{"service": "cart", "address": "127.0.0.1:9100"}'

step "An error is RFC 9457 problem+json with a stable code (404 instance_not_found: register again)"
# Without --fail-with-body: the 404 is the point of this step, not a failure of the tour.
run curl -sS -X POST "$W/heartbeat" "${json[@]}" -d '{"service": "user-service", "id": "gone"}'

step "Operations"
run "${curl[@]}" "$W/health"
run "${curl[@]}" "$W/ready"
# awk rather than head: head would stop reading early, and curl would fail writing the rest.
run_line "$(quote "${curl[@]}" "$W/metrics") | grep '^waypost_' | awk 'NR <= 10'"
echo "The OpenAPI document is at $W/openapi.json and the docs UI at $W/docs"
