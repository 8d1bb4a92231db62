# Shared by the bench scripts (sourced, not run): process
# bookkeeping, free ports, readiness polling, and starting the mock or a
# private redis-server.

# Only what the script started is stopped, by PID.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls until $2 answers, failing if process $1 exits or 30 s pass.
wait_ready() {
  local pid=$1 url=$2 deadline=$((SECONDS + 30))
  until curl -fs -o /dev/null "$url"; do
    kill -0 "$pid" 2>/dev/null || { echo "process for $url exited during start-up" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "timed out waiting for $url" >&2; exit 1; }
    sleep 0.1
  done
}

# Starts a private redis-server (no persistence) on a free port; sets
# REDIS_PORT once it answers.
start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null &
  PIDS+=($!)
  local deadline=$((SECONDS + 10))
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "redis-server did not start" >&2; exit 1; }
    sleep 0.1
  done
}

# Starts `$SLUICE mock` on a free port (further arguments go to it); sets
# MOCK_PORT and MOCK_PID once it answers.
start_mock() {
  MOCK_PORT=$(free_port)
  "$SLUICE" mock --listen "127.0.0.1:$MOCK_PORT" "$@" >/dev/null &
  MOCK_PID=$!
  PIDS+=($MOCK_PID)
  wait_ready $MOCK_PID "http://127.0.0.1:$MOCK_PORT/v1/models"
}
