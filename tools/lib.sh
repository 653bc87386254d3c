# Shared by the tools/*.sh checks: start a throwaway control plane and learn its address.
# Usage: start_control_plane BIN  -> sets CP_PID and CP_ADDR; the caller traps `stop_control_plane`.

start_control_plane() {
  local bin=$1
  CP_LOG=$(mktemp)
  "$bin" --in-memory --listen 127.0.0.1:0 --log-format json 2>"$CP_LOG" &
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
