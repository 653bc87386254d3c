# Shared by the tools/*.sh checks: start a throwaway control plane and learn its address.
# Usage: start_control_plane BIN [FLAG...]  -> sets CP_PID and CP_ADDR; the caller traps
# `stop_control_plane`.

start_control_plane() {
  local bin=$1
  shift
  CP_LOG=$(mktemp)
  "$bin" --in-memory --listen 127.0.0.1:0 --log-format json "$@" 2>"$CP_LOG" &
  CP_PID=$!
  CP_ADDR=""
  for _ in $(seq 1 100); do
    CP_ADDR=$(grep -o '"http":"[^"]*"' "$CP_LOG" | head -1 | cut -d'"' -f4 || true)
    [ -n "$CP_ADDR" ] && return 0
    sleep 0.1
  done
  echo "control plane did not start:" >&2
  cat "$CP_LOG" >&2
  return 1
}

stop_control_plane() {
  [ -n "${CP_PID:-}" ] && kill "$CP_PID" 2>/dev/null || true
  rm -f "${CP_LOG:-}"
}

# For the benchmark scripts: a work directory, background processes stopped and the directory
# removed at exit (`bench_setup`; add each started PID to `pids`), a free loopback port
# (`free_port`), and a control plane started in memory on CPU 1 (`bench_control_plane`, sets
# `cp` to its address).
bench_setup() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}

# `bench_setup_kill NAME`: the same for scripts whose servers hold data directories in the work
# directory (/tmp/NAME.XXXXXX): at exit every started process that still runs is killed with
# SIGKILL (the data is thrown away), after checking that its command line still names the work
# directory, so that a reused process id is never ours to kill.
bench_setup_kill() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  pids=()
  trap bench_kill_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_kill_cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    if grep -qF "$work" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}

# `logged_addr LOG`: the address a control plane started with `--log-format json` logged (as
# `"http":"127.0.0.1:PORT"`), waiting up to 30 s; prints the log and fails without one.
logged_addr() {
  local addr="" n
  for n in $(seq 300); do
    addr=$(grep -o '"http":"[^"]*"' "$1" | head -1 | cut -d'"' -f4 || true)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    sleep 0.1
  done
  cat "$1" >&2
  return 1
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_control_plane() {
  taskset -c 1 "${CARGO_TARGET_DIR:-target}/release/waypost-control" --in-memory --listen 127.0.0.1:0 --write-rate 0 --log-format json 2>"$work/control.log" &
  pids+=($!)
  cp=$(logged_addr "$work/control.log")
}

# For the proxy benchmarks. `wait_port PORT`: something accepts on 127.0.0.1:PORT (about 10 s,
# longer under valgrind: WAIT_TRIES tenths of a second). `wait_routed PORT`: a proxy there
# answers `Host: backend` with 200. `haproxy_http_cfg PORT BACKEND_PORT`: haproxy's config for
# an http-mode front end on PORT to the backend, one thread, connection reuse, X-Forwarded-For
# (callers may append sections).
wait_port() {
  for _ in $(seq "${WAIT_TRIES:-100}"); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing on port $1" >&2
  return 1
}

wait_routed() {
  local code=""
  for _ in $(seq "${WAIT_TRIES:-100}"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: backend' "http://127.0.0.1:$1/" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  echo "the proxy on port $1 never routed to the backend (last status: $code)" >&2
  return 1
}

haproxy_http_cfg() {
  cat <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend http
  mode http
  bind 127.0.0.1:$1
  default_backend backend
backend backend
  mode http
  http-reuse always
  option forwardfor
  server b1 127.0.0.1:$2
EOF
}
